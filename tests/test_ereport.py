"""EREPORT and local attestation on the simulated platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from haven.errors import ReportError
from haven.tee.sgx.structs import Attributes, Report, ReportBody, TargetInfo
from haven.tee.sim.cpu import SimEnclave
from haven.tee.sim.platform import SimPlatform
from tests.sim_helpers import DEBUG, cached_key, load, make_platform, small_image

DATA = bytes(range(64))


@pytest.fixture
def platform(tmp_path: Path) -> SimPlatform:
    return make_platform(tmp_path / "platform.json")


@pytest.fixture
def pair(platform: SimPlatform) -> tuple[SimEnclave, SimEnclave]:
    """(sender, target): two different enclaves on one platform."""
    return load(platform, small_image(b"sender"), isvprodid=3, isvsvn=5), load(
        platform, small_image(b"target")
    )


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x80]) + raw[at + 1 :]


def test_round_trip(pair: tuple[SimEnclave, SimEnclave], platform: SimPlatform) -> None:
    sender, target = pair
    report = sender.ereport(target.target_info(), DATA)
    body = target.verify_report(report)
    s = sender.secs
    assert body.mrenclave == s.mrenclave and body.mrsigner == s.mrsigner
    assert (body.isvprodid, body.isvsvn) == (3, 5)
    assert body.attributes == s.attributes and body.miscselect == s.miscselect
    assert body.cpusvn == platform.config.cpusvn
    assert body.reportdata == DATA
    assert report.keyid == platform.report_keyid
    # Through bytes, as a report travels.
    assert target.verify_report(Report.from_bytes(report.to_bytes())) == body


def test_a_report_to_oneself(platform: SimPlatform) -> None:
    enclave = load(platform)
    assert enclave.verify_report(enclave.ereport(enclave.target_info())).reportdata == bytes(64)


def test_another_process_of_the_same_platform_agrees(
    pair: tuple[SimEnclave, SimEnclave], platform: SimPlatform
) -> None:
    sender, _ = pair
    target_elsewhere = load(SimPlatform.open(platform.path), small_image(b"target"))
    report = sender.ereport(target_elsewhere.target_info(), DATA)
    assert target_elsewhere.verify_report(report).reportdata == DATA


def test_the_wrong_target_cannot_verify(pair: tuple[SimEnclave, SimEnclave], platform: SimPlatform) -> None:
    sender, target = pair
    report = sender.ereport(target.target_info(), DATA)
    for wrong in (
        sender,
        load(platform, small_image(b"third")),
        load(platform, small_image(b"target"), attributes=DEBUG),  # same MRENCLAVE, debug
    ):
        with pytest.raises(ReportError, match="does not verify"):
            wrong.verify_report(report)
    # As on SGX, the report key names its target by MRENCLAVE (and attributes), not by MRSIGNER:
    # the same enclave signed by someone else is the same target.
    same_code = load(platform, small_image(b"target"), key=cached_key("other"))
    assert same_code.verify_report(report).reportdata == DATA


def test_a_target_info_that_names_other_attributes_fails(pair: tuple[SimEnclave, SimEnclave]) -> None:
    sender, target = pair
    info = target.target_info()
    for changed in (
        info.replace(attributes=Attributes(flags=info.attributes.flags ^ 2, xfrm=info.attributes.xfrm)),
        info.replace(miscselect=1),
        info.replace(configsvn=1),
        info.replace(configid=b"\x01" * 64),
        info.replace(measurement=bytes(32)),
    ):
        with pytest.raises(ReportError):
            target.verify_report(sender.ereport(changed, DATA))


BODY_FIELDS = [(f.name, f.offset) for f in ReportBody._layout()]


@pytest.mark.parametrize(("field", "offset"), BODY_FIELDS, ids=[f[0] for f in BODY_FIELDS])
def test_a_changed_body_field_fails(pair: tuple[SimEnclave, SimEnclave], field: str, offset: int) -> None:
    sender, target = pair
    raw = sender.ereport(target.target_info(), DATA).to_bytes()
    changed = Report.from_bytes(_flip(raw, offset), strict=False)
    with pytest.raises(ReportError):
        target.verify_report(changed)


@pytest.mark.parametrize("offset", [384, 415, 416, 431])
def test_a_changed_keyid_or_mac_fails(pair: tuple[SimEnclave, SimEnclave], offset: int) -> None:
    sender, target = pair
    raw = sender.ereport(target.target_info(), DATA).to_bytes()
    with pytest.raises(ReportError):
        target.verify_report(Report.from_bytes(_flip(raw, offset)))


def test_a_report_from_another_platform_fails(pair: tuple[SimEnclave, SimEnclave], tmp_path: Path) -> None:
    _, target = pair
    other = make_platform(tmp_path / "other.json")
    other.config.cpusvn = target.platform.config.cpusvn
    sender_elsewhere = load(other, small_image(b"sender"))
    report = sender_elsewhere.ereport(target.target_info(), DATA)
    with pytest.raises(ReportError, match="another platform"):
        target.verify_report(report)


def test_a_report_made_before_a_cpusvn_change_no_longer_verifies(
    pair: tuple[SimEnclave, SimEnclave], platform: SimPlatform
) -> None:
    sender, target = pair
    report = sender.ereport(target.target_info(), DATA)
    platform.config.cpusvn = bytes([platform.config.cpusvn[0] + 1]) + platform.config.cpusvn[1:]
    with pytest.raises(ReportError):
        target.verify_report(report)


@pytest.mark.parametrize("data", [b"", bytes(63), bytes(65), "x" * 64])
def test_reportdata_must_be_64_bytes(pair: tuple[SimEnclave, SimEnclave], data: object) -> None:
    sender, target = pair
    with pytest.raises(ReportError, match="64 bytes"):
        sender.ereport(target.target_info(), data)  # type: ignore[arg-type]


def test_bad_target_infos_are_refused(pair: tuple[SimEnclave, SimEnclave]) -> None:
    sender, target = pair
    info = target.target_info()
    for bad, match in (
        (info.replace(reserved1=b"\x00\x01"), "reserved"),
        (info.replace(reserved3=b"\x01" + bytes(383)), "reserved"),
        (info.replace(configsvn=1 << 16), "TARGETINFO"),
        (b"\x00" * 512, "TARGETINFO"),
    ):
        with pytest.raises(ReportError, match=match):
            sender.ereport(bad, DATA)  # type: ignore[arg-type]


def test_verify_report_refuses_non_reports(pair: tuple[SimEnclave, SimEnclave]) -> None:
    _, target = pair
    with pytest.raises(ReportError):
        target.verify_report(b"\x00" * 432)  # type: ignore[arg-type]
    with pytest.raises(ReportError, match="malformed"):
        target.verify_report(Report(mac=b"short"))


def test_a_target_info_of_nobody_still_gives_a_body(pair: tuple[SimEnclave, SimEnclave]) -> None:
    sender, _ = pair
    report = sender.ereport(TargetInfo(), DATA)
    assert report.body.mrenclave == sender.secs.mrenclave

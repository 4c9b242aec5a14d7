"""EGETKEY on the simulated platform: what each key depends on, and every refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from haven.errors import KeyRequestError
from haven.tee.sgx.structs import (
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    KeyName,
    KeyPolicy,
    KeyRequest,
)
from haven.tee.sim.cpu import SimEnclave
from haven.tee.sim.keys import KeyDependencies, cmac
from haven.tee.sim.platform import SimPlatform
from tests.sim_helpers import DEBUG, cached_key, load, make_platform, small_image

F = AttributeFlags
MASK = Attributes(flags=0xFF00_0000_0000_000B, xfrm=0)
KEYID = bytes(range(32))


@pytest.fixture
def platform(tmp_path: Path) -> SimPlatform:
    return make_platform(tmp_path / "platform.json")


def _request(enclave: SimEnclave, **kw: object) -> KeyRequest:
    fields: dict[str, object] = {
        "keyname": KeyName.SEAL_KEY,
        "keypolicy": KeyPolicy.MRSIGNER,
        "isvsvn": enclave.secs.isvsvn,
        "cpusvn": enclave.platform.config.cpusvn,
        "attributemask": MASK,
        "keyid": KEYID,
        "miscmask": 0xF000_0000,
    }
    fields.update(kw)
    return KeyRequest(**fields)  # type: ignore[arg-type]


def _key(enclave: SimEnclave, **kw: object) -> bytes:
    return enclave.egetkey(_request(enclave, **kw))


def _refused(enclave: SimEnclave, match: str, **kw: object) -> None:
    with pytest.raises(KeyRequestError, match=match) as e:
        _key(enclave, **kw)
    assert "\n" not in str(e.value)


def test_the_dependency_table_covers_its_size() -> None:
    assert len(KeyDependencies().to_bytes()) == KeyDependencies.SIZE == 288


def test_seal_key_is_deterministic_and_depends_on_the_request(platform: SimPlatform) -> None:
    enclave = load(platform)
    key = _key(enclave)
    assert len(key) == 16 and key == _key(enclave)
    assert key == _key(load(SimPlatform.open(platform.path)))  # another process, same platform
    others = {
        _key(enclave, keyid=bytes(32)),
        _key(enclave, keypolicy=KeyPolicy.MRENCLAVE),
        _key(enclave, keypolicy=KeyPolicy.MRENCLAVE | KeyPolicy.MRSIGNER),
        _key(enclave, isvsvn=0),
        _key(enclave, cpusvn=bytes(16)),
        _key(enclave, attributemask=Attributes(flags=MASK.flags | F.MODE64BIT, xfrm=0)),
        _key(enclave, miscmask=0),
    }
    assert key not in others and len(others) == 7


def test_mrenclave_keys_differ_between_images_mrsigner_keys_do_not(platform: SimPlatform) -> None:
    a = load(platform, small_image(b"one"))
    b = load(platform, small_image(b"two"))
    assert _key(a, keypolicy=KeyPolicy.MRENCLAVE) != _key(b, keypolicy=KeyPolicy.MRENCLAVE)
    assert _key(a, keypolicy=KeyPolicy.MRSIGNER) == _key(b, keypolicy=KeyPolicy.MRSIGNER)


def test_mrsigner_keys_depend_on_signer_and_product(platform: SimPlatform) -> None:
    base = _key(load(platform))
    assert _key(load(platform, key=cached_key("other"))) != base
    assert _key(load(platform, isvprodid=2)) != base


def test_a_newer_enclave_can_derive_older_keys_not_the_reverse(platform: SimPlatform) -> None:
    old = load(platform, isvsvn=2)
    new = load(platform, small_image(b"version 3"), isvsvn=3)
    assert _key(new, isvsvn=2) == _key(old, isvsvn=2)
    assert _key(new, isvsvn=3) != _key(new, isvsvn=2)
    _refused(old, "ISVSVN 3 is above the enclave's ISVSVN 2", isvsvn=3)


def test_cpusvn_above_the_platforms_is_refused_componentwise(platform: SimPlatform) -> None:
    enclave = load(platform)
    current = platform.config.cpusvn
    older = bytes([current[0] - 1]) + current[1:]
    assert _key(enclave, cpusvn=older) != _key(enclave)
    for i in (0, 7, 15):
        above = bytearray(current)
        above[i] += 1
        _refused(enclave, "CPUSVN .* is above the platform's", cpusvn=bytes(above))
    # Newer in one component, older in another: still above the platform in that one.
    mixed = bytes([current[0] + 1, current[1] - 1]) + current[2:]
    _refused(enclave, "CPUSVN", cpusvn=mixed)


def test_a_cpusvn_upgrade_keeps_old_keys_a_downgrade_loses_new_ones(platform: SimPlatform) -> None:
    enclave = load(platform)
    old_cpusvn = platform.config.cpusvn
    old_key = _key(enclave)
    newer = bytes([old_cpusvn[0] + 1]) + old_cpusvn[1:]
    platform.config.cpusvn = newer
    platform.save()
    upgraded = load(SimPlatform.open(platform.path))
    assert _key(upgraded, cpusvn=old_cpusvn) == old_key
    new_key = _key(upgraded, cpusvn=newer)
    assert new_key != old_key
    platform.config.cpusvn = old_cpusvn
    platform.save()
    downgraded = load(SimPlatform.open(platform.path))
    _refused(downgraded, "CPUSVN", cpusvn=newer)


def test_configsvn_above_the_enclaves_is_refused(platform: SimPlatform) -> None:
    enclave = load(platform)
    _refused(enclave, "CONFIGSVN 1 is above", configsvn=1)


def test_reserved_policy_bits_and_fields_are_refused(platform: SimPlatform) -> None:
    enclave = load(platform)
    _refused(enclave, "KEYPOLICY .* reserved", keypolicy=KeyPolicy.MRSIGNER | 1 << 6)
    _refused(enclave, "KEYPOLICY .* reserved", keypolicy=1 << 15)
    _refused(enclave, "reserved fields", reserved1=b"\x00\x01")
    _refused(enclave, "reserved fields", reserved2=bytes(433) + b"\x01")


@pytest.mark.parametrize(
    "bit", [KeyPolicy.NOISVPRODID, KeyPolicy.CONFIGID, KeyPolicy.ISVFAMILYID, KeyPolicy.ISVEXTPRODID]
)
def test_kss_policy_bits_need_kss(platform: SimPlatform, bit: KeyPolicy) -> None:
    _refused(load(platform), "need KSS", keypolicy=KeyPolicy.MRSIGNER | bit)


def test_kss_policy_bits_with_kss(platform: SimPlatform) -> None:
    kss = Attributes(flags=int(F.MODE64BIT | F.KSS), xfrm=XFRM_LEGACY)
    a = load(platform, attributes=kss, isvprodid=1, isvfamilyid=b"\x01" * 16)
    b = load(platform, attributes=kss, isvprodid=2, isvfamilyid=b"\x02" * 16)
    no_prodid = KeyPolicy.MRSIGNER | KeyPolicy.NOISVPRODID
    assert _key(a, keypolicy=no_prodid) == _key(b, keypolicy=no_prodid)
    assert _key(a) != _key(b)
    family = no_prodid | KeyPolicy.ISVFAMILYID
    assert _key(a, keypolicy=family) != _key(b, keypolicy=family)


@pytest.mark.parametrize(
    ("keyname", "match"),
    [
        (KeyName.EINITTOKEN_KEY, "launch enclave"),
        (KeyName.PROVISION_KEY, "PROVISIONKEY attribute"),
        (KeyName.PROVISION_SEAL_KEY, "PROVISIONKEY attribute"),
        (5, "unknown KEYNAME"),
        (0xFFFF, "unknown KEYNAME"),
    ],
)
def test_keys_an_ordinary_enclave_cannot_have(platform: SimPlatform, keyname: int, match: str) -> None:
    _refused(load(platform), match, keyname=keyname)


def test_malformed_key_requests_are_refused(platform: SimPlatform) -> None:
    enclave = load(platform)
    _refused(enclave, "malformed", isvsvn=70000)
    _refused(enclave, "malformed", keyid=b"short")
    with pytest.raises(KeyRequestError, match="KEYREQUEST"):
        enclave.egetkey(b"\x00" * 512)  # type: ignore[arg-type]


def test_provisioning_keys_for_the_quoting_enclave(platform: SimPlatform) -> None:
    prov = Attributes(flags=int(F.MODE64BIT | F.PROVISIONKEY), xfrm=XFRM_LEGACY)
    qe = load(platform, key=platform.qe_signing_key(), attributes=prov)
    pk = _key(qe, keyname=KeyName.PROVISION_KEY)
    psk = _key(qe, keyname=KeyName.PROVISION_SEAL_KEY)
    sk = _key(qe)
    assert len({pk, psk, sk}) == 3
    # The provisioning keys ignore KEYID and survive a change of owner; the seal key does not.
    assert _key(qe, keyname=KeyName.PROVISION_KEY, keyid=bytes(32)) == pk
    platform.config.owner_epoch = b"\x55" * 16
    assert _key(qe, keyname=KeyName.PROVISION_KEY) == pk
    assert _key(qe, keyname=KeyName.PROVISION_SEAL_KEY) == psk
    assert _key(qe) != sk
    _refused(qe, "ISVSVN", keyname=KeyName.PROVISION_KEY, isvsvn=2)


def test_owner_epoch_and_platform_change_the_seal_key(platform: SimPlatform, tmp_path: Path) -> None:
    enclave = load(platform)
    key = _key(enclave)
    other_platform = make_platform(tmp_path / "other.json")
    other_platform.config.cpusvn = platform.config.cpusvn
    assert _key(load(other_platform)) != key
    platform.config.owner_epoch = bytes(16)
    assert _key(enclave) != key


def test_a_debug_enclave_never_gets_the_production_seal_key(platform: SimPlatform) -> None:
    production = load(platform)
    debug = load(platform, attributes=DEBUG)
    assert production.secs.mrenclave == debug.secs.mrenclave
    no_mask = Attributes(flags=0, xfrm=0)  # even when the request leaves DEBUG out of the mask
    for policy in (KeyPolicy.MRENCLAVE, KeyPolicy.MRSIGNER):
        assert _key(production, keypolicy=policy, attributemask=no_mask) != _key(
            debug, keypolicy=policy, attributemask=no_mask
        )


def test_report_key_is_the_key_that_macs_reports_for_this_enclave(platform: SimPlatform) -> None:
    target = load(platform)
    sender = load(platform, small_image(b"sender"))
    report = sender.ereport(target.target_info(), b"\x07" * 64)
    key = target.egetkey(KeyRequest(keyname=KeyName.REPORT_KEY, keyid=report.keyid))
    assert cmac(key, report.body.to_bytes()) == report.mac
    # REPORT_KEY ignores the rest of the request, and the sender cannot derive the target's key.
    noisy = KeyRequest(keyname=KeyName.REPORT_KEY, keyid=report.keyid, isvsvn=9, cpusvn=b"\xff" * 16)
    assert target.egetkey(noisy) == key
    assert sender.egetkey(KeyRequest(keyname=KeyName.REPORT_KEY, keyid=report.keyid)) != key

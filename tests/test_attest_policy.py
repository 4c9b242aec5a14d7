"""The appraisal policy: strict parsing (errors name the JSON path), every reference value on real evidence
(match → accepted, mismatch → `policy` naming the field), TCB statuses, debug, report data, the EAR status
and trustworthiness vector, and the trusted-roots rule for the simulation root."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from haven.attest import roots as pinned
from haven.attest.appraisal import Appraisal, appraise
from haven.attest.errors import AttestationError
from haven.attest.policy import (
    DEFAULT_TCB_STATUSES,
    Policy,
    PolicyError,
    is_simulation_root,
    load_policy,
    parse_policy,
)
from haven.attest.result import VerifiedEvidence
from haven.attest.verify import fingerprint, resolve_roots
from haven.tee.sim.pki import root_ca_certificate
from tests.attest_helpers import verified
from tests.sim_quote_support import make_platform

pytestmark = pytest.mark.usefixtures("vectors")


def policy(**doc: Any) -> Policy:
    return parse_policy(json.dumps(doc).encode())


def check(evidence: VerifiedEvidence, **doc: Any) -> Appraisal:
    return appraise(evidence, policy(**doc))


def accepted(evidence: VerifiedEvidence, **doc: Any) -> Appraisal:
    result = check(evidence, **doc)
    assert result.problems == (), [str(p) for p in result.problems]
    assert result.status != "contraindicated"
    return result


def refused(evidence: VerifiedEvidence, kind: str, message: str, **doc: Any) -> Appraisal:
    result = check(evidence, **doc)
    assert result.status == "contraindicated"
    assert result.problems, "the policy should have refused"
    first = result.problems[0]
    assert first.kind == kind and message in str(first), str(first)
    with pytest.raises(AttestationError) as e:
        result.check()
    assert e.value is first
    return result


def _other(hexstr: str) -> str:
    """The same value with its last byte changed."""
    return hexstr[:-2] + f"{int(hexstr[-2:], 16) ^ 1:02x}"


ALL_SGX_STATUSES = ["UpToDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"]


# -- parsing ----------------------------------------------------------------------------------------------


def test_empty_policy_defaults() -> None:
    p = parse_policy(b"{}")
    assert p.tcb_statuses == DEFAULT_TCB_STATUSES == ("UpToDate", "SWHardeningNeeded")
    assert p.allow_debug is False and p.report_data is None and p.trusted_roots is None
    assert p.id.startswith("sha256:") and len(p.id) == 7 + 64
    assert p.references == {} and p.accepts_tee("nitro")


def test_the_default_policy_accepts_any_status_verification_accepts() -> None:
    p = Policy.default()
    assert "Revoked" not in p.tcb_statuses and "OutOfDate" in p.tcb_statuses
    assert p.id == "haven:default" and not p.allow_debug


def test_full_policy() -> None:
    p = policy(
        id="policy:test/1",
        version=1,
        tcb_statuses=["UpToDate", "UpToDate", "OutOfDate"],
        allow_debug=True,
        report_data="0xC0FFEE",
        trusted_roots=["intel-sgx", {"name": "mine", "sha256": "ab" * 32}],
        sgx={"mrenclave": ["00" * 32, "11" * 32], "isvprodid": [1, 2], "min_isvsvn": 3},
        nitro={"pcrs": {"2": "22" * 48, "0": "00" * 48}},
    )
    assert p.id == "policy:test/1" and p.allow_debug
    assert p.tcb_statuses == ("UpToDate", "OutOfDate")
    assert p.report_data == b"\xc0\xff\xee"
    assert p.trusted_roots is not None and [r.name for r in p.trusted_roots] == ["intel-sgx", "mine"]
    assert [c.field for c in p.references["sgx"]] == ["sgx.mrenclave", "sgx.isvprodid", "sgx.min_isvsvn"]
    assert p.references["sgx"][0].accepted == (bytes(32), b"\x11" * 32)
    assert [c.field for c in p.references["nitro"]] == ["nitro.pcrs.0", "nitro.pcrs.2"]
    assert p.accepts_tee("sgx") and not p.accepts_tee("tdx")


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], "$: must be a JSON object"),
        ({"allow-debug": True}, "$.allow-debug: unknown member"),
        ({"version": 2}, "$.version: must be 1"),
        ({"id": ""}, "$.id: must be a non-empty string"),
        ({"id": 5}, "$.id"),
        ({"allow_debug": "yes"}, "$.allow_debug: must be true or false"),
        ({"report_data": "xyz"}, "$.report_data: is not hex"),
        ({"report_data": "abc"}, "$.report_data: is not hex"),
        ({"report_data": "00 11"}, "$.report_data: is not hex"),
        ({"report_data": "0x"}, "$.report_data: must be 1 to 64 bytes"),
        ({"report_data": ""}, "$.report_data: must be 1 to 64 bytes"),
        ({"report_data": "00" * 65}, "$.report_data: must be 1 to 64 bytes, not 65"),
        ({"report_data": 7}, "$.report_data: must be a hex string"),
        ({"tcb_statuses": []}, "$.tcb_statuses: must be a non-empty list"),
        ({"tcb_statuses": "UpToDate"}, "$.tcb_statuses: must be a non-empty list"),
        ({"tcb_statuses": ["UpToDate", "Fine"]}, "$.tcb_statuses[1]: 'Fine' is not a TCB status"),
        ({"tcb_statuses": ["Revoked"]}, "$.tcb_statuses[0]: 'Revoked' is always refused"),
        ({"sgx": []}, "$.sgx: must be a JSON object"),
        ({"sgx": {"mrtd": "00"}}, "$.sgx.mrtd: unknown member"),
        ({"sgx": {"mrenclave": "00" * 31}}, "$.sgx.mrenclave: must be 32 bytes (64 hex digits), not 31"),
        ({"sgx": {"mrenclave": ["00" * 32, "zz"]}}, "$.sgx.mrenclave[1]: is not hex"),
        ({"sgx": {"mrenclave": []}}, "$.sgx.mrenclave: lists no accepted value"),
        ({"sgx": {"mrsigner": 1}}, "$.sgx.mrsigner: must be a hex string"),
        ({"sgx": {"isvprodid": True}}, "$.sgx.isvprodid: must be an integer from 0 to 65535"),
        ({"sgx": {"isvprodid": [1, 65536]}}, "$.sgx.isvprodid[1]: must be an integer from 0 to 65535"),
        ({"sgx": {"min_isvsvn": -1}}, "$.sgx.min_isvsvn: must be an integer"),
        ({"sgx": {"min_isvsvn": [1]}}, "$.sgx.min_isvsvn: must be an integer"),
        ({"tdx": {"rtmr4": "00" * 48}}, "$.tdx.rtmr4: unknown member"),
        ({"tdx": {"mrtd": "00" * 32}}, "$.tdx.mrtd: must be 48 bytes"),
        ({"tdx": {"td_attributes": "00" * 4}}, "$.tdx.td_attributes: must be 8 bytes"),
        ({"snp": {"host_data": "00" * 48}}, "$.snp.host_data: must be 32 bytes"),
        ({"snp": {"vmpl": 4}}, "$.snp.vmpl: must be an integer from 0 to 3"),
        ({"snp": {"policy": {"smt": 1}}}, "$.snp.policy.smt: must be true or false"),
        ({"snp": {"policy": {"sev_es": True}}}, "$.snp.policy.sev_es: unknown member"),
        ({"snp": {"min_tcb": {"ucode": 1}}}, "$.snp.min_tcb.ucode: unknown member"),
        ({"snp": {"min_tcb": {"snp": 256}}}, "$.snp.min_tcb.snp: must be an integer from 0 to 255"),
        ({"nitro": {"pcrs": {"32": "00" * 48}}}, "$.nitro.pcrs.32: unknown member"),
        ({"nitro": {"pcrs": {"01": "00" * 48}}}, "$.nitro.pcrs.01: unknown member"),
        ({"nitro": {"pcrs": {"0": "00" * 32}}}, "$.nitro.pcrs.0: must be 48 bytes"),
        ({"nitro": {"pcr0": "00" * 48}}, "$.nitro.pcr0: unknown member"),
        ({"trusted_roots": []}, "$.trusted_roots: must be a non-empty list"),
        ({"trusted_roots": ["haven-simulation"]}, "$.trusted_roots[0]: the simulation root is trusted only"),
        ({"trusted_roots": ["intel"]}, "$.trusted_roots[0]: unknown root 'intel'"),
        ({"trusted_roots": [{"name": "x"}]}, "$.trusted_roots[0]: give exactly one of certificate"),
        ({"trusted_roots": [{"name": "x", "certificate": "a", "sha256": "00" * 32}]}, "exactly one"),
        (
            {"trusted_roots": [{"name": "x", "sha256": "00" * 31}]},
            "$.trusted_roots[0].sha256: must be 32 bytes",
        ),
        (
            {"trusted_roots": [{"name": "", "sha256": "00" * 32}]},
            "$.trusted_roots[0].name: must be a non-empty",
        ),
        (
            {"trusted_roots": [{"name": "amd", "sha256": "00" * 32}]},
            "$.trusted_roots[0].name: 'amd' is a pinned",
        ),
        (
            {"trusted_roots": [{"name": "x", "certificate": ""}]},
            "$.trusted_roots[0].certificate: must be a file",
        ),
        ({"trusted_roots": [{"name": "x", "path": "a"}]}, "$.trusted_roots[0].path: unknown member"),
    ],
)
def test_policy_errors_name_the_path(doc: Any, where: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(json.dumps(doc).encode())
    assert str(e.value).startswith("policy ")
    assert where in str(e.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"id": "a", "id": "b"}', "'id' appears twice"),
        (b'{"sgx": {"mrenclave": "00", "mrenclave": "11"}}', "'mrenclave' appears twice"),
        (b"[" * 100000, "not valid JSON"),
        (b" " * (1 << 20) + b"{}", "larger than"),
    ],
)
def test_unparseable_policies(data: bytes, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(data)


def test_load_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"trusted_roots": [{"name": "own", "certificate": "root.pem"}]}))
    p = load_policy(path)
    assert p.trusted_roots is not None and p.trusted_roots[0].path == tmp_path / "root.pem"
    path.write_text('{"sgx": {"mrenclave": 1}}')
    with pytest.raises(PolicyError, match=r"p\.json: policy \$\.sgx\.mrenclave: must be a hex string"):
        load_policy(path)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.json")


# -- SGX reference values (the dcap-qvl SGX v3 vector) ----------------------------------------------------


def test_sgx_vector_and_its_status() -> None:
    ev = verified("sgx")
    assert ev.tcb_status == "ConfigurationAndSWHardeningNeeded"
    # Not in the default statuses of a policy file: refused, naming the member.
    r = refused(
        ev, "policy", "policy tcb_statuses: TCB status ConfigurationAndSWHardeningNeeded is not accepted"
    )
    assert r.vector["hardware"] == 96 and r.vector["configuration"] == 96
    ok = accepted(ev, tcb_statuses=ALL_SGX_STATUSES)
    assert ok.status == "warning"
    assert ok.vector == {"instance-identity": 2, "hardware": 32, "configuration": 32, "runtime-opaque": 2}


@pytest.mark.parametrize("field", ["mrenclave", "mrsigner"])
def test_sgx_measurements(field: str) -> None:
    ev = verified("sgx")
    value = ev.measurements[field]
    ok = accepted(ev, tcb_statuses=ALL_SGX_STATUSES, sgx={field: value})
    assert ok.vector["executables"] == 2  # SGX measures every page the enclave runs
    accepted(ev, tcb_statuses=ALL_SGX_STATUSES, sgx={field: [_other(value), value.upper()]})
    r = refused(
        ev,
        "policy",
        f"policy sgx.{field}: the evidence has {value}, not the accepted value",
        tcb_statuses=ALL_SGX_STATUSES,
        sgx={field: _other(value)},
    )
    assert r.vector["executables"] == 96
    refused(
        ev,
        "policy",
        "not any of the 2 accepted values",
        tcb_statuses=ALL_SGX_STATUSES,
        sgx={field: [_other(value), "00" * 32]},
    )


def test_sgx_product_and_svn() -> None:
    ev = verified("sgx")
    prodid, svn = ev.claims["isvprodid"], ev.claims["isvsvn"]
    base = {"tcb_statuses": ALL_SGX_STATUSES}
    accepted(ev, **base, sgx={"isvprodid": prodid, "min_isvsvn": svn})
    accepted(ev, **base, sgx={"isvprodid": [prodid + 1, prodid]})
    refused(
        ev,
        "policy",
        f"policy sgx.isvprodid: isvprodid {prodid} is not one of {prodid + 1}",
        **base,
        sgx={"isvprodid": prodid + 1},
    )
    refused(
        ev,
        "policy",
        f"policy sgx.min_isvsvn: isvsvn {svn} is below the minimum {svn + 1}",
        **base,
        sgx={"min_isvsvn": svn + 1},
    )


def test_every_check_runs_and_is_reported() -> None:
    ev = verified("sgx")
    r = check(ev, sgx={"mrenclave": "00" * 32, "mrsigner": "00" * 32}, report_data="ff")
    fields = [str(p).split(":")[0] for p in r.problems]
    assert fields == [
        "policy tcb_statuses",
        "policy sgx.mrenclave",
        "policy sgx.mrsigner",
        "policy report_data",
    ]
    assert r.to_ear()["ear.veraison.policy-claims"]["problems"][1]["kind"] == "policy"


# -- TDX --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"])
def test_tdx_measurements(field: str) -> None:
    ev = verified("tdx")
    value = ev.measurements[field]
    ok = accepted(ev, tdx={field: value})
    assert ok.status == "affirming"
    assert ok.vector["executables"] == 3  # TDX measures the boot image
    r = refused(ev, "policy", f"policy tdx.{field}: the evidence has {value}", tdx={field: _other(value)})
    assert r.vector["executables"] == 96


def test_tdx_seam_and_attributes() -> None:
    ev = verified("tdx")
    mrseam, attrs = ev.measurements["mrseam"], ev.claims["td_attributes"]
    ok = accepted(ev, tdx={"mrseam": mrseam, "td_attributes": attrs})
    assert ok.vector["hardware"] == 2 and ok.vector["configuration"] == 2 and "executables" not in ok.vector
    r = refused(ev, "policy", "policy tdx.mrseam", tdx={"mrseam": _other(mrseam)})
    assert r.vector["hardware"] == 96
    r = refused(ev, "policy", "policy tdx.td_attributes", tdx={"td_attributes": _other(attrs)})
    assert r.vector["configuration"] == 96


def test_a_tee_the_policy_does_not_name() -> None:
    refused(
        verified("tdx"),
        "policy",
        "tdx evidence is not accepted (the policy names sgx, nitro)",
        sgx={},
        nitro={},
    )
    accepted(verified("tdx"), tdx={})  # an empty section accepts the TEE without reference values


# -- TCB statuses and the EAR mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "hardware", "configuration", "ear_status"),
    [
        ("UpToDate", 2, 2, "affirming"),
        ("SWHardeningNeeded", 32, 2, "warning"),
        ("ConfigurationNeeded", 2, 32, "warning"),
        ("ConfigurationAndSWHardeningNeeded", 32, 32, "warning"),
        ("OutOfDate", 32, 2, "warning"),
        ("OutOfDateConfigurationNeeded", 32, 32, "warning"),
    ],
)
def test_tcb_status_mapping(status: str, hardware: int, configuration: int, ear_status: str) -> None:
    ev = dataclasses.replace(verified("tdx"), tcb_status=status)
    ok = accepted(ev, tcb_statuses=[status])
    assert (ok.vector["hardware"], ok.vector["configuration"], ok.status) == (
        hardware,
        configuration,
        ear_status,
    )
    if status != "UpToDate":
        no = refused(
            ev,
            "policy",
            f"TCB status {status} is not accepted (accepted: UpToDate)",
            tcb_statuses=["UpToDate"],
        )
        assert 96 in (no.vector["hardware"], no.vector["configuration"])
    else:
        no = refused(ev, "policy", "TCB status UpToDate is not accepted", tcb_statuses=["OutOfDate"])
        assert no.vector["hardware"] == 96


def test_unknown_status_from_a_verifier_is_refused() -> None:
    ev = dataclasses.replace(verified("tdx"), tcb_status="TDRelaunchAdvised")
    r = appraise(ev, Policy.default())
    assert r.status == "contraindicated" and r.vector["hardware"] == 96


# -- SEV-SNP ----------------------------------------------------------------------------------------------


def test_snp_measurement_and_host_data() -> None:
    ev = verified("snp")
    m, host = ev.measurements["measurement"], ev.claims["host_data"]
    ok = accepted(ev, snp={"measurement": m, "host_data": host})
    assert ok.vector["executables"] == 3 and ok.vector["configuration"] == 2 and ok.status == "affirming"
    refused(ev, "policy", "policy snp.measurement", snp={"measurement": _other(m)})
    r = refused(ev, "policy", "policy snp.host_data", snp={"host_data": _other(host)})
    assert r.vector["configuration"] == 96


def test_snp_vmpl_and_guest_svn() -> None:
    ev = verified("snp")
    vmpl, svn = ev.claims["vmpl"], ev.claims["guest_svn"]
    accepted(ev, snp={"vmpl": vmpl, "min_guest_svn": svn})
    refused(
        ev,
        "policy",
        f"policy snp.vmpl: vmpl {vmpl} is not one of {(vmpl + 1) % 4}",
        snp={"vmpl": (vmpl + 1) % 4},
    )
    refused(ev, "policy", "policy snp.min_guest_svn: guest_svn", snp={"min_guest_svn": svn + 1})


@pytest.mark.parametrize(
    ("name", "bit"),
    [
        ("smt", 16),
        ("migrate_ma", 18),
        ("debug", 19),
        ("single_socket", 20),
        ("cxl_allow", 21),
        ("mem_aes_256_xts", 22),
        ("rapl_dis", 23),
        ("ciphertext_hiding", 24),
        ("page_swap_disable", 25),
    ],
)
def test_snp_guest_policy_bits(name: str, bit: int) -> None:
    ev = verified("snp")
    value = ev.claims["policy"]["value"]
    actual = bool(value >> bit & 1)
    accepted(ev, snp={"policy": {name: actual}})
    state = "clear" if actual else "set"
    refused(
        ev,
        "policy",
        f"policy snp.policy.{name}: the guest policy (0x{value:x}) must have bit {bit} {state}",
        snp={"policy": {name: not actual}},
    )


def test_snp_minimum_tcb() -> None:
    ev = verified("snp")
    tcb = ev.claims["reported_tcb"]
    assert set(tcb) == {"bootloader", "tee", "snp", "microcode"}  # Milan: no FMC
    ok = accepted(ev, snp={"min_tcb": dict(tcb)})
    assert ok.vector["hardware"] == 2
    for component, level in tcb.items():
        if level < 255:
            r = refused(
                ev,
                "policy",
                f"policy snp.min_tcb.{component}: reported_tcb.{component} {level} is below",
                snp={"min_tcb": {component: level + 1}},
            )
            assert r.vector["hardware"] == 96
    refused(
        ev,
        "policy",
        "policy snp.min_tcb.fmc: the evidence has no reported_tcb.fmc",
        snp={"min_tcb": {"fmc": 0}},
    )


def test_snp_debug_guest() -> None:
    ev = verified("snp-debug")
    assert ev.debug
    r = refused(ev, "debug", "the snp TEE runs in debug mode, and debug is not allowed")
    assert r.vector["configuration"] == 96 and r.vector["runtime-opaque"] == 96
    ok = accepted(ev, allow_debug=True)
    assert ok.vector["configuration"] == 32 and "runtime-opaque" not in ok.vector and ok.status == "warning"


# -- Nitro ------------------------------------------------------------------------------------------------


def test_nitro_pcrs() -> None:
    ev = verified("nitro")
    pcrs = {str(i): ev.measurements[f"pcr{i}"] for i in range(3)}
    ok = accepted(ev, nitro={"pcrs": pcrs})
    # Nitro isolates enclave memory but does not encrypt it: AR4SI runtime-opaque 32, a warning.
    assert ok.vector == {
        "instance-identity": 2,
        "configuration": 2,
        "hardware": 2,
        "executables": 2,
        "runtime-opaque": 32,
    }
    assert ok.status == "warning"
    r = refused(
        ev,
        "policy",
        f"policy nitro.pcrs.1: the evidence has {pcrs['1']}",
        nitro={"pcrs": {**pcrs, "1": _other(pcrs["1"])}},
    )
    assert r.vector["executables"] == 96
    refused(
        ev, "policy", "policy nitro.pcrs.31: the evidence has no pcr31", nitro={"pcrs": {"31": "00" * 48}}
    )


def test_nitro_debug() -> None:
    ev = verified("nitro-debug")
    refused(ev, "debug", "the nitro TEE runs in debug mode")
    accepted(ev, allow_debug=True)
    assert appraise(ev, policy(), allow_debug=True).accepted  # the CLI's --allow-debug
    assert not appraise(ev, policy(allow_debug=True), allow_debug=False).accepted
    # debug is reported first, whatever else is wrong
    r = refused(ev, "debug", "debug mode", nitro={"pcrs": {"0": "11" * 48}})
    assert [p.kind for p in r.problems] == ["debug", "policy"]


# -- report data ------------------------------------------------------------------------------------------


def test_report_data() -> None:
    ev = verified("tdx")
    full = ev.report_data.hex()
    ok = accepted(ev, report_data=full)
    assert ok.nonce == ev.report_data
    refused(
        ev,
        "policy",
        "policy report_data: the evidence's report data is not the expected value",
        report_data=_other(full),
    )
    refused(ev, "policy", "policy report_data", report_data=full[:32])  # a prefix is not zero-padded data
    assert appraise(ev, policy(), report_data=ev.report_data).accepted
    assert not appraise(ev, policy(report_data=full), report_data=b"\x01").accepted


def test_short_report_data_is_zero_padded() -> None:
    ev = verified("sgx")  # report data "Hello, world!" then zeros
    text = b"Hello, world!"
    assert ev.report_data == text + bytes(64 - len(text))
    ok = accepted(ev, tcb_statuses=ALL_SGX_STATUSES, report_data=text.hex())
    assert ok.nonce == text
    refused(ev, "policy", "report_data", tcb_statuses=ALL_SGX_STATUSES, report_data=text[:-1].hex())


def test_report_data_longer_than_the_evidence() -> None:
    ev = dataclasses.replace(verified("tdx"), report_data=b"\x01" * 16)
    refused(ev, "policy", "report_data", report_data="01" * 17)
    accepted(ev, report_data="01" * 16)


# -- EAR submodule ----------------------------------------------------------------------------------------


def test_to_ear() -> None:
    ev = verified("tdx")
    sub = accepted(ev, id="policy:tdx", tdx={"mrtd": ev.measurements["mrtd"]}).to_ear()
    assert sub["ear.status"] == "affirming"
    assert sub["ear.appraisal-policy-id"] == "policy:tdx"
    assert list(sub["ear.trustworthiness-vector"]) == [
        "instance-identity",
        "configuration",
        "executables",
        "hardware",
        "runtime-opaque",
    ]
    evidence = sub["ear.veraison.annotated-evidence"]
    assert evidence["tee"] == "tdx" and evidence["measurements"]["mrtd"] == ev.measurements["mrtd"]
    assert "verified" not in evidence and "ear.veraison.policy-claims" not in sub
    json.dumps(sub)  # serialisable as it stands


# -- the simulation root ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory: pytest.TempPathFactory) -> x509.Certificate:
    return root_ca_certificate(make_platform(tmp_path_factory.mktemp("p") / "platform.json"))


def test_simulation_root_is_a_warning(sim_root: x509.Certificate) -> None:
    assert is_simulation_root(sim_root.subject.rfc4514_string())
    assert not is_simulation_root(pinned.intel_sgx_root().subject.rfc4514_string())
    assert not is_simulation_root("CN=Haven Simulation Root CA")  # the organisation must match too
    assert not is_simulation_root("not a name")
    ev = dataclasses.replace(verified("tdx"), root=sim_root.subject.rfc4514_string())
    ok = accepted(ev)
    assert ok.vector["hardware"] == 32 and ok.vector["runtime-opaque"] == 32 and ok.status == "warning"


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


def test_roots_default_to_the_verifiers_pinned_ones(sim_root: x509.Certificate) -> None:
    assert resolve_roots(Policy.default()) is None
    assert resolve_roots(policy()) is None
    assert resolve_roots(Policy.default(), [sim_root]) == [sim_root]  # named on the command line


def test_vendor_root_names() -> None:
    assert resolve_roots(policy(trusted_roots=["intel-sgx"])) == [pinned.intel_sgx_root()]
    assert resolve_roots(policy(trusted_roots=["aws-nitro"])) == [pinned.aws_nitro_root()]
    assert resolve_roots(policy(trusted_roots=["amd"])) == list(pinned.amd_arks())
    assert resolve_roots(policy(trusted_roots=["amd-genoa"])) == [pinned.amd_ark("Genoa")]


def test_simulation_root_by_certificate_file(tmp_path: Path, sim_root: x509.Certificate) -> None:
    _write_cert(tmp_path / "sim.pem", sim_root)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"trusted_roots": [{"name": "haven-simulation", "certificate": "sim.pem"}]}))
    assert resolve_roots(load_policy(path)) == [sim_root]
    assert resolve_roots(load_policy(path), [sim_root]) == [sim_root]
    # Under any other name, the simulation root is refused: a policy must say that it trusts it.
    path.write_text(json.dumps({"trusted_roots": [{"name": "test-root", "certificate": "sim.pem"}]}))
    with pytest.raises(PolicyError, match=r"\$\.trusted_roots\[0\]: .* is a Haven simulation root"):
        resolve_roots(load_policy(path))
    # ... and the name is only for a simulation root.
    _write_cert(tmp_path / "intel.pem", pinned.intel_sgx_root())
    path.write_text(json.dumps({"trusted_roots": [{"name": "haven-simulation", "certificate": "intel.pem"}]}))
    with pytest.raises(PolicyError, match="is not a Haven simulation root"):
        resolve_roots(load_policy(path))


def test_simulation_root_by_fingerprint(sim_root: x509.Certificate) -> None:
    digest = fingerprint(sim_root).hex()
    p = policy(trusted_roots=["intel-sgx", {"name": "haven-simulation", "sha256": digest}])
    assert resolve_roots(p, [sim_root]) == [sim_root]
    assert resolve_roots(p) == [pinned.intel_sgx_root()]  # the fingerprint needs the certificate given
    with pytest.raises(PolicyError, match="is a Haven simulation root"):
        resolve_roots(policy(trusted_roots=[{"name": "lab", "sha256": digest}]), [sim_root])
    with pytest.raises(PolicyError, match="no root given with --root"):
        resolve_roots(policy(trusted_roots=[{"name": "haven-simulation", "sha256": digest}]))


def test_a_policy_without_the_simulation_root_refuses_it(sim_root: x509.Certificate) -> None:
    with pytest.raises(AttestationError) as e:
        resolve_roots(policy(trusted_roots=["intel-sgx"]), [sim_root])
    assert e.value.kind == "chain" and "is not among the policy's trusted roots" in str(e.value)
    # A pinned root given on the command line is one the policy names.
    assert resolve_roots(policy(trusted_roots=["intel-sgx"]), [pinned.intel_sgx_root()]) == [
        pinned.intel_sgx_root()
    ]


def test_root_files_that_do_not_load(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"trusted_roots": [{"name": "own", "certificate": "missing.pem"}]}))
    with pytest.raises(PolicyError, match=r"\$\.trusted_roots\[0\]\.certificate: cannot read"):
        resolve_roots(load_policy(path))
    (tmp_path / "missing.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(PolicyError, match=r"\$\.trusted_roots\[0\]\.certificate: .*not a certificate"):
        resolve_roots(load_policy(path))

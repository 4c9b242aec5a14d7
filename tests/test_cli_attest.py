"""`haven attest verify`, `haven attest token verify|keygen`: real vectors at their times, simulated quotes
with and without the simulation root, policies, EAR tokens end to end, and one-line errors."""

from __future__ import annotations

import datetime
import json
import stat
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from haven.bundle.build import build_bundle
from haven.bundle.container import read_bundle, write_bundle
from haven.cli.main import main
from tests.attest_helpers import SETS
from tests.sim_quote_support import app_signing_key, make_platform

pytestmark = pytest.mark.usefixtures("vectors")
REPORT_DATA = "c0ffee" + "00" * 29 + "01"


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _ok(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> dict[str, Any]:
    code, out, err = _run(capsys, "attest", "verify", *argv, "--json")
    assert code == 0, (out, err)
    assert out.count("\n") == 1 and err == ""
    doc: dict[str, Any] = json.loads(out)
    assert doc["verified"] is True
    return doc


def _refused(capsys: pytest.CaptureFixture[str], kind: str, message: str, *argv: str | Path) -> None:
    """The verdict both ways: one JSON object on stdout, and one line on stderr."""
    code, out, err = _run(capsys, "attest", "verify", *argv, "--json")
    assert code == 1, (out, err)
    doc = json.loads(out)
    assert set(doc) == {"verified", "error", "message"} and doc["verified"] is False
    assert doc["error"] == kind and message in doc["message"], doc
    code, out, err = _run(capsys, "attest", "verify", *argv)
    assert code == 1 and out == ""
    assert err.startswith(f"haven: error: [{kind}] ") and err.count("\n") == 1 and message in err, err


def _usage(capsys: pytest.CaptureFixture[str], message: str, *argv: str | Path, code: int = 1) -> None:
    got, out, err = _run(capsys, *argv)
    assert got == code, (out, err)
    assert err.startswith("haven: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err, err


# -- real evidence ----------------------------------------------------------------------------------------


def test_sgx_v3_with_collateral(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _ok(capsys, *SETS["sgx"].argv())
    assert doc["tee"] == "sgx"
    assert doc["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert doc["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert set(doc["measurements"]) == {"mrenclave", "mrsigner"}
    assert doc["report_data"] == b"Hello, world!".hex() + "00" * 51
    assert doc["debug"] is False
    assert doc["valid_from"] <= "2025-07-19T10:01:17Z" <= doc["valid_until"]
    assert doc["ear"]["ear.status"] == "warning"
    assert doc["ear"]["ear.appraisal-policy-id"] == "haven:default"


def test_sgx_v3_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "attest", "verify", *SETS["sgx"].argv())
    assert code == 0 and err == ""
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert lines["advisory_ids"] == "INTEL-SA-00289, INTEL-SA-00615"
    assert lines["ear_status"] == "warning (policy haven:default)"
    assert lines["debug"] == "no"


def test_sgx_collateral_window(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a for a in SETS["sgx"].argv() if a not in ("--now", SETS["sgx"].now)]
    _refused(capsys, "expired", "", *argv, "--now", "2025-09-01T00:00:00Z")
    _refused(capsys, "not-yet-valid", "", *argv, "--now", "2018-01-01T00:00:00Z")


def test_tdx_v4(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _ok(capsys, *SETS["tdx"].argv())
    assert (doc["tee"], doc["tcb_status"], doc["advisory_ids"]) == ("tdx", "UpToDate", [])
    assert {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrseam"} <= set(doc["measurements"])
    assert doc["ear"]["ear.status"] == "affirming"


def test_snp_milan(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _ok(capsys, *SETS["snp"].argv())
    assert (doc["tee"], doc["tcb_status"], doc["debug"]) == ("snp", "UpToDate", False)
    assert set(doc["measurements"]) == {"measurement"}
    assert doc["valid_from"] == "2023-04-03T19:23:43Z"


def test_snp_debug_guest(capsys: pytest.CaptureFixture[str]) -> None:
    _refused(capsys, "debug", "the snp TEE runs in debug mode", *SETS["snp-debug"].argv())
    assert _ok(capsys, *SETS["snp-debug"].argv(), "--allow-debug")["debug"] is True


def test_snp_chain_and_crl_arguments(
    capsys: pytest.CaptureFixture[str], vectors: Path, tmp_path: Path
) -> None:
    s = SETS["snp"]
    # Without --chain, the shipped ASK is used; a chain of another product is refused.
    argv = [str(s.path()), "--vek", str(vectors / str(s.vek)), "--now", s.now]
    assert _ok(capsys, *argv)["tee"] == "snp"
    _refused(capsys, "chain", "", *argv, "--chain", vectors / "snp/go-sev-guest/ask_ark_genoa.pem")
    (tmp_path / "crl.pem").write_text("not a CRL")
    _refused(capsys, "malformed", "not a CRL", *s.argv(), "--crl", tmp_path / "crl.pem")


def test_nitro(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _ok(capsys, *SETS["nitro"].argv())
    assert doc["tee"] == "nitro" and doc["debug"] is False
    assert doc["valid_until"] == "2024-09-07T17:37:39Z"


def test_nitro_debug(capsys: pytest.CaptureFixture[str]) -> None:
    _refused(
        capsys,
        "debug",
        "the nitro TEE runs in debug mode, and debug is not allowed",
        *SETS["nitro-debug"].argv(),
    )
    doc = _ok(capsys, *SETS["nitro-debug"].argv(), "--allow-debug")
    assert doc["debug"] is True and doc["ear"]["ear.trustworthiness-vector"]["configuration"] == 32


def test_nitro_at_the_wrong_time(capsys: pytest.CaptureFixture[str]) -> None:
    path = SETS["nitro"].path()
    _refused(capsys, "expired", "", path, "--now", "2024-09-08T00:00:00Z")
    _refused(capsys, "not-yet-valid", "", path, "--now", "1700000000")


def test_pinned_roots_replaced(capsys: pytest.CaptureFixture[str], vectors: Path) -> None:
    # --root replaces the pinned roots: Intel's root alone cannot anchor an AWS chain.
    root = vectors / "sgx/dcap-qvl/TrustedRootCA.der"
    _refused(capsys, "chain", "", *SETS["nitro"].argv(), "--root", root)
    assert _ok(capsys, *SETS["sgx"].argv(), "--root", root)["tee"] == "sgx"
    assert _ok(
        capsys, *SETS["nitro"].argv(), "--root", vectors / "nitro/blocky-nitrite/aws_nitro_root_g1.pem"
    )


def test_policy_on_real_evidence(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tdx = _ok(capsys, *SETS["tdx"].argv())
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {"id": "policy:tdx", "trusted_roots": ["intel-sgx"], "tdx": {"mrtd": tdx["measurements"]["mrtd"]}}
        )
    )
    doc = _ok(capsys, *SETS["tdx"].argv(), "--policy", policy)
    assert doc["ear"]["ear.appraisal-policy-id"] == "policy:tdx"
    assert doc["ear"]["ear.trustworthiness-vector"]["executables"] == 3
    _refused(
        capsys,
        "policy",
        "sgx evidence is not accepted (the policy names tdx)",
        *SETS["sgx"].argv(),
        "--policy",
        policy,
    )
    (tmp_path / "empty.json").write_text("{}")
    _refused(
        capsys,
        "policy",
        "tcb_statuses: TCB status ConfigurationAndSWHardeningNeeded is not accepted",
        *SETS["sgx"].argv(),
        "--policy",
        tmp_path / "empty.json",
    )
    policy.write_text(json.dumps({"tdx": {"mrtd": "00" * 48}}))
    _refused(capsys, "policy", "policy tdx.mrtd: the evidence has", *SETS["tdx"].argv(), "--policy", policy)
    _refused(capsys, "policy", "policy report_data", *SETS["tdx"].argv(), "--report-data", "00")
    rd = tdx["report_data"]
    assert _ok(capsys, *SETS["tdx"].argv(), "--report-data", rd)["report_data"] == rd


# -- simulated quotes -------------------------------------------------------------------------------------


def _bundle(work: Path, debug: bool) -> Path:
    examples = resources.files("haven.cli") / "examples"
    manifest = (examples / "hello.toml").read_text().replace("debug = false", f"debug = {str(debug).lower()}")
    (work / "hello.toml").write_text(manifest)
    (work / "hello.wasm").write_bytes(wasmtime.wat2wasm((examples / "hello.wat").read_text()))
    write_bundle(build_bundle(work / "hello.toml", app_signing_key()), work / "hello.bundle")
    return work / "hello.bundle"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A platform, a production and a debug bundle quoted on it, its collateral and its root CA."""
    work = tmp_path_factory.mktemp("sim")
    platform = make_platform(work / "platform.json").path
    files = {"platform": platform, "root": work / "root.der", "collateral": work / "collateral.json"}
    for name, debug in (("quote", False), ("debug-quote", True)):
        bundle = _bundle(tmp_path_factory.mktemp(name), debug)
        files[name] = work / f"{name}.bin"
        files[f"{name}-bundle"] = bundle
        argv = [
            "sim",
            "quote",
            bundle,
            "--report-data",
            REPORT_DATA,
            "-o",
            files[name],
            "--platform",
            platform,
        ]
        assert main([str(a) for a in [*argv, "--collateral-out", files["collateral"]]]) == 0
    assert main(["sim", "root-ca", "-o", str(files["root"]), "--platform", str(platform)]) == 0
    return files


def _sim_argv(sim: dict[str, Path], quote: str = "quote") -> list[str | Path]:
    return [sim[quote], "--collateral", sim["collateral"]]


def test_simulated_quote_with_the_simulation_root(
    capsys: pytest.CaptureFixture[str], sim: dict[str, Path]
) -> None:
    capsys.readouterr()
    doc = _ok(capsys, *_sim_argv(sim), "--root", sim["root"])
    assert doc["tee"] == "sgx" and doc["tcb_status"] == "UpToDate"
    assert doc["measurements"]["mrenclave"] == read_bundle(sim["quote-bundle"]).mrenclave().hex()
    assert doc["report_data"] == REPORT_DATA.ljust(128, "0")
    assert "CN=Haven Simulation Root CA" in doc["root"]
    # No hardware protects a simulated enclave: never affirming.
    assert doc["ear"]["ear.status"] == "warning"
    assert doc["ear"]["ear.trustworthiness-vector"]["hardware"] == 32


def test_simulated_quote_without_the_simulation_root(
    capsys: pytest.CaptureFixture[str], sim: dict[str, Path]
) -> None:
    capsys.readouterr()
    _refused(capsys, "chain", "", *_sim_argv(sim))


def test_simulated_debug_enclave(capsys: pytest.CaptureFixture[str], sim: dict[str, Path]) -> None:
    capsys.readouterr()
    argv = [*_sim_argv(sim, "debug-quote"), "--root", sim["root"]]
    _refused(capsys, "debug", "the sgx TEE runs in debug mode", *argv)
    assert _ok(capsys, *argv, "--allow-debug")["debug"] is True


def test_simulation_root_through_a_policy(
    capsys: pytest.CaptureFixture[str], sim: dict[str, Path], tmp_path: Path
) -> None:
    capsys.readouterr()
    mrenclave = read_bundle(sim["quote-bundle"]).mrenclave().hex()
    policy = tmp_path / "policy.json"
    sim_root = {"name": "haven-simulation", "certificate": str(sim["root"])}
    policy.write_text(json.dumps({"trusted_roots": [sim_root], "sgx": {"mrenclave": mrenclave}}))
    doc = _ok(capsys, *_sim_argv(sim), "--policy", policy)
    assert doc["ear"]["ear.trustworthiness-vector"]["executables"] == 2
    policy.write_text(json.dumps({"trusted_roots": [sim_root], "sgx": {"mrenclave": "00" * 32}}))
    _refused(
        capsys,
        "policy",
        f"policy sgx.mrenclave: the evidence has {mrenclave}",
        *_sim_argv(sim),
        "--policy",
        policy,
    )
    # A production policy never trusts it, even when it is given with --root.
    policy.write_text(json.dumps({"trusted_roots": ["intel-sgx"]}))
    _refused(
        capsys,
        "chain",
        "is not among the policy's trusted roots",
        *_sim_argv(sim),
        "--root",
        sim["root"],
        "--policy",
        policy,
    )
    _refused(capsys, "chain", "", *_sim_argv(sim), "--policy", policy)
    policy.write_text(json.dumps({"trusted_roots": [{"name": "lab", "certificate": str(sim["root"])}]}))
    _usage(capsys, "is a Haven simulation root", "attest", "verify", *_sim_argv(sim), "--policy", policy)


# -- EAR tokens -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ear_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ear")
    assert main(["attest", "token", "keygen", "-o", str(d / "ear.pem"), "--jwks", str(d / "jwks.json")]) == 0
    return d / "ear.pem", d / "jwks.json"


def test_keygen(capsys: pytest.CaptureFixture[str], ear_key: tuple[Path, Path], tmp_path: Path) -> None:
    key, jwks = ear_key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    doc = json.loads(jwks.read_text())
    assert doc["keys"][0]["kty"] == "EC" and "d" not in doc["keys"][0]
    _usage(capsys, "already exists", "attest", "token", "keygen", "-o", key, "--jwks", tmp_path / "j.json")
    _usage(capsys, "already exists", "attest", "token", "keygen", "-o", tmp_path / "k.pem", "--jwks", jwks)
    _usage(
        capsys,
        "name the same file",
        "attest",
        "token",
        "keygen",
        "-o",
        tmp_path / "x",
        "--jwks",
        tmp_path / "x",
    )
    _usage(
        capsys,
        "does not exist",
        "attest",
        "token",
        "keygen",
        "-o",
        tmp_path / "no" / "k",
        "--jwks",
        tmp_path / "j",
    )
    assert not (tmp_path / "k.pem").exists() and not (tmp_path / "j.json").exists()


def test_ear_round_trip(
    capsys: pytest.CaptureFixture[str], ear_key: tuple[Path, Path], tmp_path: Path
) -> None:
    key, jwks = ear_key
    token = tmp_path / "result.jwt"
    s = SETS["tdx"]
    doc = _ok(capsys, *s.argv(), "--ear-key", key, "--ear-out", token)
    assert doc["ear_out"] == str(token) and "ear_token" not in doc
    code, out, err = _run(capsys, "attest", "token", "verify", token, "--key", jwks, "--now", s.now, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["verified"] is True and result["status"] == "affirming"
    assert result["iat"] == 1752919234
    # The result holds an hour, or until the evidence's validity ends (here: the collateral's, 1 s later).
    valid_until = int(datetime.datetime.fromisoformat(doc["valid_until"]).timestamp())
    assert result["exp"] == min(1752919234 + 3600, valid_until) == 1752919235
    sub = result["claims"]["submods"]["tdx"]
    assert sub["ear.veraison.annotated-evidence"]["measurements"] == doc["measurements"]
    # Human output, and the token given inline.
    code, out, _ = _run(
        capsys, "attest", "token", "verify", token.read_text().strip(), "--key", jwks, "--now", s.now
    )
    assert code == 0 and "status    affirming" in out and "submod    tdx: affirming" in out


def test_ear_expires_with_the_evidence(
    capsys: pytest.CaptureFixture[str], ear_key: tuple[Path, Path], tmp_path: Path
) -> None:
    key, jwks = ear_key
    token = tmp_path / "t.jwt"
    # The SGX collateral expires one second after the vector's time: so does the result.
    _ok(capsys, *SETS["sgx"].argv(), "--ear-key", key, "--ear-out", token)
    code, out, _ = _run(
        capsys, "attest", "token", "verify", token, "--key", jwks, "--now", "1752919277", "--json"
    )
    assert code == 0 and json.loads(out)["exp"] == 1752919278
    code, out, _ = _run(
        capsys, "attest", "token", "verify", token, "--key", jwks, "--now", "1752919400", "--json"
    )
    assert code == 1 and json.loads(out)["error"] == "expired"


def test_ear_printed_and_nonce(capsys: pytest.CaptureFixture[str], ear_key: tuple[Path, Path]) -> None:
    key, jwks = ear_key
    s = SETS["snp"]
    doc = _ok(capsys, *s.argv(), "--ear-key", key, "--report-data", _ok(capsys, *s.argv())["report_data"])
    code, out, _ = _run(
        capsys, "attest", "token", "verify", doc["ear_token"], "--key", jwks, "--now", s.now, "--json"
    )
    claims = json.loads(out)["claims"]
    assert code == 0 and "eat_nonce" in claims
    code, out, _ = _run(capsys, "attest", "verify", *s.argv(), "--ear-key", key)
    line = next(x for x in out.splitlines() if x.startswith("ear_token"))
    assert line.split()[1].count(".") == 2


def test_refused_evidence_gets_a_contraindicated_result(
    capsys: pytest.CaptureFixture[str], ear_key: tuple[Path, Path], tmp_path: Path
) -> None:
    key, jwks = ear_key
    token = tmp_path / "t.jwt"
    s = SETS["nitro-debug"]
    code, _, _ = _run(capsys, "attest", "verify", *s.argv(), "--ear-key", key, "--ear-out", token)
    assert code == 1
    code, out, _ = _run(capsys, "attest", "token", "verify", token, "--key", jwks, "--now", s.now, "--json")
    result = json.loads(out)
    assert code == 0 and result["status"] == "contraindicated"
    problems = result["claims"]["submods"]["nitro"]["ear.veraison.policy-claims"]["problems"]
    assert problems[0]["kind"] == "debug"


def test_token_refusals(
    capsys: pytest.CaptureFixture[str], ear_key: tuple[Path, Path], tmp_path: Path
) -> None:
    key, jwks = ear_key
    token = tmp_path / "t.jwt"
    s = SETS["tdx"]
    _ok(capsys, *s.argv(), "--ear-key", key, "--ear-out", token)
    base: list[str | Path] = ["attest", "token", "verify", "--key", jwks]

    def refused(kind: str, *argv: str | Path) -> None:
        code, out, err = _run(capsys, *base, *argv, "--json")
        assert code == 1 and json.loads(out)["error"] == kind, (out, err)
        code, out, err = _run(capsys, *base, *argv)
        assert code == 1 and err.startswith(f"haven: error: [{kind}] ") and err.count("\n") == 1

    refused("expired", token, "--now", "2025-07-19T12:00:00Z")
    refused("not-yet-valid", token, "--now", "2025-07-19T09:00:00Z")
    h, p, sig = token.read_text().strip().split(".")
    refused("signature", f"{h}.{p}.{sig[:-4]}AAAA", "--now", s.now)
    refused("signature", f"{h}.{p[:-4]}AAAA.{sig}", "--now", s.now)
    other = tmp_path / "other"
    other.mkdir()
    assert (
        main(["attest", "token", "keygen", "-o", str(other / "k.pem"), "--jwks", str(other / "j.json")]) == 0
    )
    capsys.readouterr()
    code, out, _ = _run(capsys, "attest", "token", "verify", token, "--key", other / "j.json", "--json")
    assert code == 1 and json.loads(out)["error"] == "signature"
    capsys.readouterr()
    _usage(capsys, "neither a file nor a JWT", *base, tmp_path / "missing.jwt")
    (tmp_path / "junk").write_text("{}")
    _usage(capsys, "cannot read --key", "attest", "token", "verify", token, "--key", tmp_path / "none.json")
    _usage(capsys, "not a P-256 EC key", "attest", "token", "verify", token, "--key", tmp_path / "junk")


# -- usage errors -----------------------------------------------------------------------------------------


def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, ear_key: tuple[Path, Path]) -> None:
    s = SETS["nitro"]
    v = ("attest", "verify")
    _usage(capsys, "neither an RFC 3339 time nor Unix seconds", *v, s.path(), "--now", "yesterday", code=2)
    _usage(capsys, "has no time zone", *v, s.path(), "--now", "2024-09-07T14:37:39", code=2)
    _usage(capsys, "report data must be 1 to 64 bytes", *v, s.path(), "--report-data", "abc", code=2)
    _usage(capsys, "report data must be 1 to 64 bytes", *v, s.path(), "--report-data", "00" * 65, code=2)
    _usage(capsys, "cannot read evidence", *v, tmp_path / "missing.bin")
    _usage(capsys, "is a directory", *v, tmp_path)
    _usage(capsys, "--ear-out needs --ear-key", *v, s.path(), "--ear-out", tmp_path / "t")
    _usage(capsys, "does not apply to nitro evidence", *v, *s.argv(), "--collateral", tmp_path)
    _usage(capsys, "does not apply to nitro evidence", *v, *s.argv(), "--vek", SETS["snp"].path())
    _usage(capsys, "give --vek", *v, SETS["snp"].path(), "--now", SETS["snp"].now)
    _usage(capsys, "give --collateral", *v, SETS["sgx"].path())
    _usage(capsys, "cannot read --vek", *v, SETS["snp"].path(), "--vek", tmp_path / "none")
    _usage(capsys, "EAR signing key", *v, *s.argv(), "--ear-key", tmp_path / "none.pem")
    (tmp_path / "bad.json").write_text('{"sgx": {"mrenclave": "00"}}')
    _usage(
        capsys, "policy $.sgx.mrenclave: must be 32 bytes", *v, *s.argv(), "--policy", tmp_path / "bad.json"
    )
    _usage(capsys, "cannot read", *v, *s.argv(), "--policy", tmp_path / "none.json")
    key, _ = ear_key
    _usage(capsys, "the directory of", *v, *s.argv(), "--ear-key", key, "--ear-out", tmp_path / "no" / "t")


def test_hostile_inputs_are_verdicts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\x01garbage")
    _refused(capsys, "malformed", "neither a DCAP quote", junk)
    junk.write_text("")
    _refused(capsys, "malformed", "empty", junk)
    (tmp_path / "root.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    _refused(capsys, "malformed", "not a certificate", *SETS["nitro"].argv(), "--root", tmp_path / "root.pem")
    (tmp_path / "coll.json").write_text("{}")
    _refused(capsys, "malformed", "collateral", SETS["sgx"].path(), "--collateral", tmp_path / "coll.json")
    data = bytearray(SETS["tdx"].path().read_bytes())
    data[200] ^= 1  # inside the signed TD report
    (tmp_path / "tdx.bin").write_bytes(bytes(data))
    tdx = SETS["tdx"]
    _refused(
        capsys, "signature", "", tmp_path / "tdx.bin", "--collateral", str(tdx.argv()[4]), "--now", tdx.now
    )

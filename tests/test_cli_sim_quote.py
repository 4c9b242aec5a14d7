"""`haven sim quote`, `haven sim root-ca`, `haven sim collateral`: the whole round trip through files,
and a one-line error (never a traceback) for every bad argument."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import dcap_qvl
import pytest
import wasmtime
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from haven.bundle.build import build_bundle
from haven.bundle.container import read_bundle, write_bundle
from haven.cli.main import main
from haven.tee.sgx.quote import decode_quote_v3
from haven.tee.sim.collateral import PCS_FILES
from haven.tee.sim.pki import root_ca_certificate
from haven.tee.sim.platform import SimPlatform
from tests.sim_quote_support import app_signing_key, make_platform


def _build(work: Path, *, debug: bool) -> Path:
    examples = resources.files("haven.cli") / "examples"
    manifest = (examples / "hello.toml").read_text()
    (work / "hello.toml").write_text(manifest.replace("debug = false", "debug = true") if debug else manifest)
    (work / "hello.wasm").write_bytes(wasmtime.wat2wasm((examples / "hello.wat").read_text()))
    write_bundle(build_bundle(work / "hello.toml", app_signing_key()), work / "hello.bundle")
    return work / "hello.bundle"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("bundle"), debug=False)


@pytest.fixture
def platform(tmp_path: Path) -> SimPlatform:
    return make_platform(tmp_path / "platform.json")


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _fails(capsys: pytest.CaptureFixture[str], message: str, *argv: str | Path, code: int = 1) -> None:
    got, out, err = _run(capsys, *argv)
    assert got == code, (out, err)
    assert err.startswith("haven: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and message in err, err


def test_round_trip_through_files(
    capsys: pytest.CaptureFixture[str], bundle: Path, platform: SimPlatform, tmp_path: Path
) -> None:
    quote, coll, root, pcs = tmp_path / "q.bin", tmp_path / "c.json", tmp_path / "root.der", tmp_path / "pcs"
    code, out, _ = _run(
        capsys,
        "sim",
        "quote",
        bundle,
        "--report-data",
        "0xC0FFEE",
        "-o",
        quote,
        "--collateral-out",
        coll,
        "--pcs-dir",
        pcs,
        "--platform",
        platform.path,
    )
    assert code == 0
    image = read_bundle(bundle).image
    assert f"MRENCLAVE   {image.mrenclave().hex()}" in out
    q = decode_quote_v3(quote.read_bytes())
    assert q.report_body.reportdata == b"\xc0\xff\xee" + bytes(61)
    assert q.report_body.mrenclave == image.mrenclave()
    assert sorted(p.name for p in pcs.iterdir()) == sorted(PCS_FILES)

    assert _run(capsys, "sim", "root-ca", "-o", root, "--platform", platform.path)[0] == 0
    result = dcap_qvl.verify_with_root_ca(
        quote.read_bytes(),
        dcap_qvl.QuoteCollateralV3.from_json(coll.read_text()),
        root.read_bytes(),
        int(time.time()),
    )
    assert result.status == "UpToDate"


def test_quote_uses_the_default_platform(
    capsys: pytest.CaptureFixture[str], bundle: Path, platform_path: Path, tmp_path: Path
) -> None:
    make_platform(platform_path)  # $HAVEN_SIM_PLATFORM of this test
    assert _run(capsys, "sim", "quote", bundle, "--report-data", "00" * 64, "-o", tmp_path / "q")[0] == 0
    assert _run(capsys, "sim", "root-ca", "-o", tmp_path / "r.der")[0] == 0
    root = root_ca_certificate(SimPlatform.open(platform_path))
    assert (tmp_path / "r.der").read_bytes() == root.public_bytes(Encoding.DER)


def test_debug_bundle_is_quoted_with_a_warning(
    capsys: pytest.CaptureFixture[str], platform: SimPlatform, tmp_path: Path
) -> None:
    debug = _build(tmp_path, debug=True)
    code, out, _ = _run(
        capsys,
        "sim",
        "quote",
        debug,
        "--report-data",
        "01",
        "-o",
        tmp_path / "q",
        "--platform",
        platform.path,
    )
    assert code == 0 and "warning: DEBUG enclave" in out
    assert decode_quote_v3((tmp_path / "q").read_bytes()).report_body.attributes.debug


def test_root_ca_pem(capsys: pytest.CaptureFixture[str], platform: SimPlatform, tmp_path: Path) -> None:
    code, out, _ = _run(
        capsys, "sim", "root-ca", "-o", tmp_path / "root.pem", "--pem", "--platform", platform.path
    )
    assert code == 0 and "Haven Simulation Root CA" in out
    cert = x509.load_pem_x509_certificate((tmp_path / "root.pem").read_bytes())
    assert cert == root_ca_certificate(platform)


def test_collateral_command(
    capsys: pytest.CaptureFixture[str], platform: SimPlatform, tmp_path: Path
) -> None:
    out = tmp_path / "c.json"
    assert _run(capsys, "sim", "collateral", "-o", out, "--platform", platform.path)[0] == 0
    doc = json.loads(out.read_text())
    assert json.loads(doc["tcb_info"])["fmspc"] == platform.config.fmspc.hex().upper()
    assert (
        _run(capsys, "sim", "collateral", "--pcs-dir", tmp_path / "pcs", "--platform", platform.path)[0] == 0
    )
    assert sorted(p.name for p in (tmp_path / "pcs").iterdir()) == sorted(PCS_FILES)


# -- bad arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("xyz", "hex digits"),
        ("abc", "even number"),
        ("", "empty"),
        ("0x", "empty"),
        ("00" * 65, "65 bytes"),
        ("0g", "hex digits"),
    ],
)
def test_bad_report_data(
    capsys: pytest.CaptureFixture[str], bundle: Path, tmp_path: Path, value: str, message: str
) -> None:
    _fails(capsys, message, "sim", "quote", bundle, "--report-data", value, "-o", tmp_path / "q", code=2)
    assert not (tmp_path / "q").exists()


def test_missing_arguments(capsys: pytest.CaptureFixture[str], bundle: Path, tmp_path: Path) -> None:
    _fails(capsys, "--report-data", "sim", "quote", bundle, "-o", tmp_path / "q", code=2)
    _fails(capsys, "-o", "sim", "quote", bundle, "--report-data", "00", code=2)
    _fails(capsys, "-o", "sim", "root-ca", code=2)
    _fails(capsys, "give -o FILE, --pcs-dir DIR", "sim", "collateral")


def test_bad_output_paths(
    capsys: pytest.CaptureFixture[str], bundle: Path, platform: SimPlatform, tmp_path: Path
) -> None:
    base = ("sim", "quote", bundle, "--report-data", "01", "--platform", platform.path)
    _fails(capsys, "is a directory", *base, "-o", tmp_path)
    _fails(capsys, "does not exist", *base, "-o", tmp_path / "no" / "q")
    _fails(capsys, "name the same file", *base, "-o", bundle)
    _fails(capsys, "name the same file", *base, "-o", tmp_path / "q", "--collateral-out", tmp_path / "q")
    _fails(capsys, "does not exist", *base, "-o", tmp_path / "q", "--collateral-out", tmp_path / "no" / "c")
    (tmp_path / "file").write_text("x")
    _fails(capsys, "not a directory", *base, "-o", tmp_path / "q", "--pcs-dir", tmp_path / "file")
    _fails(capsys, "does not exist", *base, "-o", tmp_path / "q", "--pcs-dir", tmp_path / "no" / "pcs")
    _fails(capsys, "is a directory", "sim", "root-ca", "-o", tmp_path, "--platform", platform.path)
    _fails(
        capsys,
        "not a directory",
        "sim",
        "collateral",
        "--pcs-dir",
        tmp_path / "file",
        "--platform",
        platform.path,
    )
    _fails(capsys, "is a directory", "sim", "collateral", "-o", tmp_path, "--platform", platform.path)
    assert not (tmp_path / "q").exists()


def test_bad_bundles(
    capsys: pytest.CaptureFixture[str], bundle: Path, platform: SimPlatform, tmp_path: Path
) -> None:
    base = ("sim", "quote", "--report-data", "01", "-o", tmp_path / "q", "--platform", platform.path)
    _fails(capsys, "cannot read", *base, tmp_path / "missing.bundle")
    (tmp_path / "junk.bundle").write_bytes(b"not a bundle at all")
    _fails(capsys, "junk.bundle", *base, tmp_path / "junk.bundle")
    # A bundle whose measured contents changed after signing: EINIT refuses it.
    data = bytearray(bundle.read_bytes())
    data[-5000] ^= 0xFF
    (tmp_path / "tampered.bundle").write_bytes(bytes(data))
    _fails(capsys, "EINIT", *base, tmp_path / "tampered.bundle")
    assert not (tmp_path / "q").exists()


def test_bad_platform_file(capsys: pytest.CaptureFixture[str], bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "platform.json"
    bad.write_text("{")
    bad.chmod(0o600)
    _fails(
        capsys,
        "not valid JSON",
        "sim",
        "quote",
        bundle,
        "--report-data",
        "01",
        "-o",
        tmp_path / "q",
        "--platform",
        bad,
    )
    _fails(capsys, "not valid JSON", "sim", "root-ca", "-o", tmp_path / "r", "--platform", bad)
    _fails(capsys, "not valid JSON", "sim", "collateral", "-o", tmp_path / "c", "--platform", bad)

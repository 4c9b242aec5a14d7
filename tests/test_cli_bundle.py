"""`haven keygen`, `haven build`, `haven measure`: happy paths; every error is one line, no traceback."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from haven.bundle.container import encode_bundle, read_bundle, write_bundle
from haven.cli.main import main
from haven.tee.sgx.sigstruct import generate_signing_key, mrsigner_of, save_signing_key
from tests.bundle_helpers import make_app, resign, tamper_segment


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    key = generate_signing_key()
    save_signing_key(key, d / "key.pem")
    (d / "key.pub.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    save_signing_key(generate_signing_key(), d / "other.pem")
    small = rsa.generate_private_key(public_exponent=3, key_size=2048)
    (d / "rsa2048.pem").write_bytes(
        small.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (d / "rsa2048.pub.pem").write_bytes(
        small.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (d / "ec.pub.pem").write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (d / "garbage.pem").write_text("not a key\n")
    return d


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Path:
    """An app directory with app.toml and a bundle of it, app.bundle (built through the CLI)."""
    d = tmp_path_factory.mktemp("built")
    manifest = make_app(d, "[enclave]\nproduct_id = 3\nsvn = 4\n")
    assert main(["build", str(manifest), "--key", str(keys / "key.pem"), "-o", str(d / "app.bundle")]) == 0
    return d


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], expected: str, code: int = 1) -> str:
    got, out, err = run(argv, capsys)
    assert got == code, (out, err)
    assert err.count("\n") == 1 and err.startswith("haven: error: "), err
    assert "Traceback" not in err
    assert expected in err, err
    return out


def _measured(out: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in out.splitlines())


# --- keygen ------------------------------------------------------------------------------------------


def test_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["keygen", "-o", str(tmp_path / "k.pem")], capsys)
    assert code == 0 and err == ""
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    mrsigner = _measured(out.split("\n", 1)[1])["mrsigner"]
    # The MRSIGNER printed is the one a bundle signed with the key carries.
    manifest = make_app(tmp_path)
    assert main(["build", str(manifest), "--key", str(tmp_path / "k.pem"), "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert mrsigner_of(read_bundle(tmp_path / "b").sigstruct).hex() == mrsigner

    before = (tmp_path / "k.pem").read_bytes()
    fails(["keygen", "-o", str(tmp_path / "k.pem")], capsys, "already exists (use --force")
    assert (tmp_path / "k.pem").read_bytes() == before
    code, out, _ = run(["keygen", "-o", str(tmp_path / "k.pem"), "--force"], capsys)
    assert code == 0 and (tmp_path / "k.pem").read_bytes() != before


def test_keygen_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["keygen", "-o", str(tmp_path / "no" / "k.pem")], capsys, "does not exist")
    fails(["keygen", "-o", str(tmp_path), "--force"], capsys, "is a directory")
    fails(["keygen"], capsys, "required: -o/--output", code=2)


# --- build ---------------------------------------------------------------------------------------------


def test_build_prints_the_identity(tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_app(tmp_path)
    code, out, err = run(
        ["build", str(manifest), "--key", str(keys / "key.pem"), "-o", str(tmp_path / "x.bundle")], capsys
    )
    assert code == 0 and err == ""
    facts = _measured(out.split("\n", 1)[1])
    bundle = read_bundle(tmp_path / "x.bundle")
    assert facts["mrenclave"] == bundle.mrenclave().hex()
    assert facts["mrsigner"] == mrsigner_of(bundle.sigstruct).hex()
    assert facts["size"].startswith(f"{(tmp_path / 'x.bundle').stat().st_size} bytes")


def test_build_errors(tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_app(tmp_path)
    key = str(keys / "key.pem")
    out = str(tmp_path / "x.bundle")
    (tmp_path / "bad.toml").write_text('[app]\nmodule = "app.wasm"\nargv = "x"\n')
    (tmp_path / "typo.toml").write_text('[app]\nmodule = "app.wasm"\n[[listen]]\nprot = 1\n')
    (tmp_path / "nowasm.toml").write_text('[app]\nmodule = "bad.toml"\n')
    cases = [
        (["build", str(tmp_path / "none.toml"), "--key", key, "-o", out], "none.toml: cannot read"),
        (
            ["build", str(tmp_path / "bad.toml"), "--key", key, "-o", out],
            "bad.toml: app.argv: must be an array",
        ),
        (["build", str(tmp_path / "typo.toml"), "--key", key, "-o", out], "listen[0].prot: unknown key"),
        (["build", str(tmp_path / "nowasm.toml"), "--key", key, "-o", out], "is not a WebAssembly module"),
        (["build", str(manifest), "--key", str(tmp_path / "none.pem"), "-o", out], "no such file"),
        (["build", str(manifest), "--key", str(keys / "garbage.pem"), "-o", out], "not a PEM file"),
        (["build", str(manifest), "--key", str(keys / "rsa2048.pem"), "-o", out], "RSA-2048"),
        (["build", str(manifest), "--key", str(keys / "key.pub.pem"), "-o", out], "public key"),
        (["build", str(manifest), "--key", key, "-o", str(tmp_path / "no" / "x.bundle")], "cannot write"),
        (["build", str(manifest), "--key", key, "-o", str(tmp_path)], "is a directory"),
    ]
    for argv, expected in cases:
        fails(argv, capsys, expected)
    assert not (tmp_path / "x.bundle").exists()  # no partial output presented as success
    fails(["build", str(manifest), "-o", out], capsys, "required: --key", code=2)


# --- measure -------------------------------------------------------------------------------------------


def test_measure(built: Path, keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = read_bundle(built / "app.bundle")
    code, out, err = run(["measure", str(built / "app.bundle")], capsys)
    assert code == 0 and err == ""
    facts = _measured(out)
    manifest = bundle.manifest()
    assert facts == {
        "mrenclave": bundle.mrenclave().hex(),
        "mrsigner": mrsigner_of(bundle.sigstruct).hex(),
        "isvprodid": "3",
        "isvsvn": "4",
        "debug": "false",
        "module_sha256": manifest.module.sha256.hex(),
        "manifest_sha256": manifest.sha256().hex(),
    }
    code, out, _ = run(["measure", "--json", str(built / "app.bundle")], capsys)
    as_json = json.loads(out)
    assert code == 0 and as_json["isvprodid"] == 3 and as_json["debug"] is False
    assert {k: str(v).lower() for k, v in as_json.items()} == {k: v.lower() for k, v in facts.items()}


def test_measure_predicts_from_the_manifest(
    built: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, bundle_out, _ = run(["measure", "--json", str(built / "app.bundle")], capsys)
    code2, predicted, _ = run(["measure", "--json", str(built / "app.toml")], capsys)
    assert code == code2 == 0
    expected = json.loads(bundle_out)
    got = json.loads(predicted)
    assert got.pop("mrsigner") is None
    assert got == {k: v for k, v in expected.items() if k != "mrsigner"}
    for signer in ("key.pem", "key.pub.pem"):
        code, out, _ = run(
            ["measure", "--json", str(built / "app.toml"), "--signer", str(keys / signer)], capsys
        )
        assert code == 0 and json.loads(out) == expected
    code, out, _ = run(["measure", str(built / "app.toml")], capsys)
    assert "(unknown: give --signer)" in out


def test_measure_a_bundle_changed_after_signing(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = read_bundle(built / "app.bundle")
    write_bundle(tamper_segment(bundle, "module", 20), tmp_path / "t.bundle")
    out = fails(["measure", str(tmp_path / "t.bundle")], capsys, "the bundle was changed after signing")
    facts = _measured(out)
    assert facts["signed_mrenclave"] == bundle.mrenclave().hex()
    assert facts["mrenclave"] != facts["signed_mrenclave"]
    out = fails(["measure", "--json", str(tmp_path / "t.bundle")], capsys, "changed after signing")
    assert json.loads(out)["signed_mrenclave"] == bundle.mrenclave().hex()


def test_measure_a_forged_signature(
    built: Path, tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = read_bundle(built / "app.bundle")
    sig = bundle.sigstruct
    forged = type(bundle)(sigstruct=sig.replace(isvsvn=sig.isvsvn + 1), image=bundle.image)
    write_bundle(forged, tmp_path / "f.bundle")
    fails(["measure", str(tmp_path / "f.bundle")], capsys, "the signature is invalid: SIGSTRUCT SIGNATURE")


def test_measure_a_signature_that_disagrees_with_the_manifest(
    built: Path, tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from haven.tee.sgx.sigstruct import load_signing_key

    bundle = read_bundle(built / "app.bundle")
    write_bundle(resign(bundle, load_signing_key(keys / "key.pem"), isvsvn=9), tmp_path / "r.bundle")
    fails(["measure", str(tmp_path / "r.bundle")], capsys, "SIGSTRUCT ISVSVN is 9 but the manifest says 4")


def test_measure_errors(built: Path, tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = encode_bundle(read_bundle(built / "app.bundle"))
    (tmp_path / "short.bundle").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.bundle").write_text("hello\n" * 400)
    (tmp_path / "bad.toml").write_text("[app\n")
    bundle = str(built / "app.bundle")
    manifest = str(built / "app.toml")
    cases = [
        (["measure", str(tmp_path / "missing.bundle")], "cannot read"),
        (["measure", str(tmp_path)], "not a regular file"),
        (["measure", str(tmp_path / "short.bundle")], "truncated"),
        (["measure", str(tmp_path / "text.bundle")], "not a Haven bundle"),
        (["measure", str(tmp_path / "bad.toml")], "not valid TOML"),
        (["measure", str(tmp_path / "none.toml")], "cannot read"),
        (["measure", bundle, "--signer", str(keys / "key.pem")], "--signer is for a manifest"),
        (["measure", manifest, "--signer", str(keys / "garbage.pem")], "not a PEM public or private key"),
        (["measure", manifest, "--signer", str(keys / "ec.pub.pem")], "not an RSA key"),
        (["measure", manifest, "--signer", str(keys / "rsa2048.pub.pem")], "RSA-3072 with exponent 3"),
        (["measure", manifest, "--signer", str(keys / "rsa2048.pem")], "RSA-2048"),
        (["measure", manifest, "--signer", str(tmp_path / "none.pem")], "cannot read"),
    ]
    for argv, expected in cases:
        fails(argv, capsys, expected)
    fails(["measure"], capsys, "required: BUNDLE|MANIFEST.toml", code=2)


def test_end_to_end_as_processes(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "haven"
    if not exe.exists():
        pytest.skip("the haven console script is not installed in this environment")
    manifest = make_app(tmp_path)

    def haven(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args], capture_output=True, text=True, check=False, timeout=120)

    keygen = haven("keygen", "-o", str(tmp_path / "k.pem"))
    build = haven(
        "build", str(manifest), "--key", str(tmp_path / "k.pem"), "-o", str(tmp_path / "app.bundle")
    )
    measure = haven("measure", "--json", str(tmp_path / "app.bundle"))
    for done in (keygen, build, measure):
        assert done.returncode == 0 and done.stderr == "", done.stderr
    facts = json.loads(measure.stdout)
    assert f"mrenclave  {facts['mrenclave']}" in build.stdout
    assert f"mrsigner  {facts['mrsigner']}" in keygen.stdout
    (tmp_path / "app.bundle").write_bytes((tmp_path / "app.bundle").read_bytes()[:-1])
    broken = haven("measure", str(tmp_path / "app.bundle"))
    assert broken.returncode == 1 and broken.stderr.count("\n") == 1 and "truncated" in broken.stderr

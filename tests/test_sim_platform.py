"""The simulated platform's data file: creation, permissions, strict parsing, configuration, CLI."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from haven.cli.main import main
from haven.errors import PlatformError
from haven.tee.sgx.sigstruct import mrsigner_of
from haven.tee.sim.platform import (
    DEFAULT_CPUSVN,
    FORMAT,
    HAVEN_FMSPC,
    FuseKey,
    PlatformConfig,
    SimPlatform,
    TcbLevel,
)
from tests.sim_helpers import cached_key, make_platform, sign, small_image


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and text
    return text


# -- creation and the file ---------------------------------------------------------------------------


def test_open_creates_the_platform_on_first_use_mode_0600(platform_path: Path) -> None:
    nested = platform_path.parent / "a" / "b" / "sim-platform.json"
    os.environ["HAVEN_SIM_PLATFORM"] = str(nested)  # restored by the conftest monkeypatch
    assert SimPlatform.default_path() == nested
    assert not nested.exists()
    platform = SimPlatform.open()
    assert platform.path == nested and nested.is_file()
    assert _mode(nested) == 0o600
    doc = json.loads(nested.read_text())
    assert doc["format"] == FORMAT
    assert len(bytes.fromhex(doc["fused_secret"])) == 32
    # No temporary files are left next to it.
    assert [p.name for p in nested.parent.iterdir()] == ["sim-platform.json"]


def test_reopening_gives_the_same_platform(tmp_path: Path) -> None:
    first = make_platform(tmp_path / "p.json")
    again = SimPlatform.open(tmp_path / "p.json")
    assert again.derive_secret("x") == first.derive_secret("x")
    assert again.created == first.created and again.created.tzinfo is not None
    assert again.config == first.config
    assert again.report_keyid == first.report_keyid
    pub = again.qe_signing_key().public_key().public_numbers()
    assert pub == first.qe_signing_key().public_key().public_numbers()


def test_two_platforms_have_different_secrets(tmp_path: Path) -> None:
    a, b = make_platform(tmp_path / "a.json"), make_platform(tmp_path / "b.json")
    assert a.derive_secret("x") != b.derive_secret("x")
    assert a.fuse_key(FuseKey.SEAL) != b.fuse_key(FuseKey.SEAL)
    assert a.report_keyid != b.report_keyid
    assert a.config.owner_epoch != b.config.owner_epoch


def test_create_refuses_to_replace_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    first = make_platform(path)
    with pytest.raises(PlatformError, match="already exists") as e:
        make_platform(path)
    _one_line(e.value)
    assert SimPlatform.open(path).derive_secret("x") == first.derive_secret("x")
    replaced = SimPlatform.create(path, overwrite=True, qe_signing_key=cached_key("qe"))
    assert replaced.derive_secret("x") != first.derive_secret("x")
    assert _mode(path) == 0o600


def test_generated_qe_key_is_rsa3072_e3_and_signs_sigstructs(tmp_path: Path) -> None:
    platform = SimPlatform.create(tmp_path / "p.json")  # generates its own key
    key = SimPlatform.open(tmp_path / "p.json").qe_signing_key()
    assert key.key_size == 3072 and key.public_key().public_numbers().e == 3
    image = small_image()
    assert mrsigner_of(sign(image, key)) == platform.qe_mrsigner()


def test_create_refuses_a_qe_key_sgx_cannot_use(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(PlatformError, match="RSA-3072"):
        SimPlatform.create(tmp_path / "p.json", qe_signing_key=weak)
    assert not (tmp_path / "p.json").exists()


def test_an_unwritable_location_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(PlatformError, match="cannot write platform file") as e:
        make_platform(tmp_path / "file" / "p.json")
    _one_line(e.value)
    with pytest.raises(PlatformError, match="cannot open it"):
        SimPlatform.open(tmp_path / "file" / "p.json")


def test_save_persists_configuration_changes(tmp_path: Path) -> None:
    platform = make_platform(tmp_path / "p.json")
    platform.config.cpusvn = bytes(range(16))
    platform.config.pck_revoked = True
    platform.save()
    again = SimPlatform.open(tmp_path / "p.json")
    assert again.config.cpusvn == bytes(range(16)) and again.config.pck_revoked
    assert again.derive_secret("x") == platform.derive_secret("x")
    assert _mode(tmp_path / "p.json") == 0o600


def test_save_refuses_an_invalid_configuration(tmp_path: Path) -> None:
    platform = make_platform(tmp_path / "p.json")
    before = (tmp_path / "p.json").read_bytes()
    platform.config.pcesvn = 70000
    with pytest.raises(PlatformError, match="PCESVN"):
        platform.save()
    assert (tmp_path / "p.json").read_bytes() == before


def test_default_path_is_in_the_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("HAVEN_SIM_PLATFORM")
    assert SimPlatform.default_path() == Path(platformdirs.user_data_dir("haven")) / "sim-platform.json"


def test_repr_and_errors_carry_no_secret(tmp_path: Path) -> None:
    platform = make_platform(tmp_path / "p.json")
    fused = json.loads((tmp_path / "p.json").read_text())["fused_secret"]
    assert fused not in repr(platform)


# -- refusing bad files ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_a_file_other_users_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "p.json"
    make_platform(path)
    path.chmod(mode)
    with pytest.raises(PlatformError, match="chmod 600") as e:
        SimPlatform.open(path)
    assert f"{mode:04o}" in _one_line(e.value)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(PlatformError, match="not a regular file"):
        SimPlatform.open(tmp_path / "d")


def _write(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.json", b" " * (2 << 20))
    with pytest.raises(PlatformError, match="larger than"):
        SimPlatform.open(path)


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[1, 2]", b"null", b'"text"'])
def test_malformed_json_is_refused(tmp_path: Path, data: bytes) -> None:
    path = _write(tmp_path / "p.json", data)
    with pytest.raises(PlatformError, match="platform file") as e:
        SimPlatform.open(path)
    _one_line(e.value)


def _mutations() -> list[tuple[str, Callable[[dict[str, Any]], None], str]]:
    def setter(*keys: str | int, value: object) -> Callable[[dict[str, Any]], None]:
        def apply(doc: dict[str, Any]) -> None:
            target: Any = doc
            for k in keys[:-1]:
                target = target[k]
            target[keys[-1]] = value

        return apply

    def deleter(*keys: str) -> Callable[[dict[str, Any]], None]:
        def apply(doc: dict[str, Any]) -> None:
            target: Any = doc
            for k in keys[:-1]:
                target = target[k]
            del target[keys[-1]]

        return apply

    lv = ("config", "tcb_levels", 0)
    return [
        ("format", setter("format", value="haven-sim-platform/2"), "format"),
        ("format-missing", deleter("format"), "format"),
        ("unknown-top", setter("extra", value=1), "unknown field extra"),
        ("created-missing", deleter("created"), "missing created"),
        ("created-bad", setter("created", value="yesterday"), "created"),
        ("created-type", setter("created", value=12), "created"),
        ("fused-short", setter("fused_secret", value="00" * 31), "fused_secret"),
        ("fused-nonhex", setter("fused_secret", value="zz" * 32), "fused_secret"),
        ("fused-type", setter("fused_secret", value=5), "fused_secret"),
        ("qe-key-type", setter("qe_signing_key", value=["pem"]), "qe_signing_key"),
        ("qe-key-not-pem", setter("qe_signing_key", value="hello"), "qe_signing_key"),
        ("config-type", setter("config", value=[]), "config must be a JSON object"),
        ("config-missing-field", deleter("config", "pcesvn"), "missing pcesvn"),
        ("config-unknown-field", setter("config", "cpu", value=1), "unknown field cpu"),
        ("cpusvn-short", setter("config", "cpusvn", value="00" * 15), "cpusvn"),
        ("cpusvn-type", setter("config", "cpusvn", value=[1] * 16), "cpusvn"),
        ("fmspc-long", setter("config", "fmspc", value="00" * 7), "fmspc"),
        ("owner-epoch", setter("config", "owner_epoch", value="0g" * 16), "owner_epoch"),
        ("pcesvn-range", setter("config", "pcesvn", value=65536), "PCESVN"),
        ("pcesvn-negative", setter("config", "pcesvn", value=-1), "PCESVN"),
        ("pcesvn-bool", setter("config", "pcesvn", value=True), "PCESVN"),
        ("pcesvn-str", setter("config", "pcesvn", value="13"), "PCESVN"),
        ("pce-id", setter("config", "pce_id", value=1.5), "PCE-ID"),
        ("qe-isvsvn", setter("config", "qe_isvsvn", value=None), "QE ISVSVN"),
        ("eval-number", setter("config", "tcb_evaluation_data_number", value=2**32), "evaluation"),
        ("revoked-type", setter("config", "pck_revoked", value=0), "pck_revoked"),
        ("levels-empty", setter("config", "tcb_levels", value=[]), "tcb_levels"),
        ("levels-type", setter("config", "tcb_levels", value={}), "tcb_levels"),
        ("level-type", setter("config", "tcb_levels", 0, value="x"), "tcb_levels\\[0\\]"),
        ("level-unknown", setter(*lv, "extra", value=1), "unknown field extra"),
        ("level-15-components", setter(*lv, "sgx_components", value=[1] * 15), "16 SGX TCB"),
        ("level-component-range", setter(*lv, "sgx_components", value=[256] + [0] * 15), "component 0"),
        ("level-components-type", setter(*lv, "sgx_components", value="00"), "lists"),
        ("level-pcesvn", setter(*lv, "pcesvn", value=-3), "PCESVN"),
        ("level-status", setter(*lv, "status", value="Fine"), "TCB status"),
        ("level-advisory", setter(*lv, "advisory_ids", value=["bad id!"]), "advisory"),
        ("level-advisory-type", setter(*lv, "advisory_ids", value=[7]), "advisory"),
        ("level-date", setter(*lv, "tcb_date", value="2025-01-01"), "TCB date"),
    ]


MUTATIONS = _mutations()


@pytest.mark.parametrize(("case", "mutate", "message"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_each_malformed_field_is_refused(tmp_path: Path, case: str, mutate: Any, message: str) -> None:
    path = tmp_path / "p.json"
    make_platform(path)
    doc = json.loads(path.read_text())
    mutate(doc)
    _write(path, json.dumps(doc).encode())
    with pytest.raises(PlatformError, match=message) as e:
        SimPlatform.open(path).qe_signing_key()
    text = _one_line(e.value)
    assert str(path) in text
    secret = doc["fused_secret"]
    # Only a real secret (a long hex string) can leak; a mutated non-string value is not one.
    if isinstance(secret, str) and len(secret) >= 16:
        assert secret not in text
    assert "PRIVATE KEY-----\nMII" not in text


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "does not load"),
        ("wrong-size", "RSA-3072"),
    ],
)
def test_a_bad_qe_key_is_refused_when_used(tmp_path: Path, pem: str, message: str) -> None:
    path = tmp_path / "p.json"
    make_platform(path)
    doc = json.loads(path.read_text())
    doc["qe_signing_key"] = _pem(rsa.generate_private_key(3, 2048)) if pem == "wrong-size" else pem
    _write(path, json.dumps(doc).encode())
    platform = SimPlatform.open(path)  # the key is loaded lazily
    with pytest.raises(PlatformError, match=message) as e:
        platform.qe_signing_key()
    _one_line(e.value)


# -- configuration and secrets ------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = PlatformConfig()
    assert cfg.cpusvn == DEFAULT_CPUSVN and cfg.tcb_components == tuple(DEFAULT_CPUSVN)
    assert (cfg.pcesvn, cfg.pce_id, cfg.qe_isvsvn, cfg.fmspc) == (13, 0, 8, HAVEN_FMSPC)
    assert cfg.tcb_levels == (TcbLevel(tuple(DEFAULT_CPUSVN), 13, "UpToDate"),)
    assert cfg.tcb_status() == "UpToDate" and not cfg.pck_revoked
    assert PlatformConfig().owner_epoch != cfg.owner_epoch  # random, as a fresh platform's


def test_default_tcb_level_follows_a_configured_cpusvn() -> None:
    cfg = PlatformConfig(cpusvn=bytes([2] * 16), pcesvn=10)
    assert cfg.tcb_levels == (TcbLevel((2,) * 16, 10, "UpToDate"),)


def test_tcb_status_of_a_platform_behind_the_levels() -> None:
    newest = TcbLevel((13,) * 2 + (3,) * 14, 13, "UpToDate")
    older = TcbLevel((12,) * 2 + (3,) * 14, 13, "OutOfDate", ("INTEL-SA-00615",))
    behind = PlatformConfig(cpusvn=bytes([12, 12] + [3] * 14), tcb_levels=(newest, older))
    assert behind.tcb_status() == "OutOfDate"
    assert (
        PlatformConfig(cpusvn=bytes([13, 13] + [3] * 14), tcb_levels=(newest, older)).tcb_status()
        == "UpToDate"
    )
    assert PlatformConfig(cpusvn=bytes(16), tcb_levels=(newest, older)).tcb_status() is None
    # PCESVN counts too.
    assert (
        PlatformConfig(cpusvn=bytes([13, 13] + [3] * 14), pcesvn=12, tcb_levels=(newest, older)).tcb_status()
        is None
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cpusvn": bytes(15)}, "CPUSVN"),
        ({"fmspc": b"HAVEN"}, "FMSPC"),
        ({"owner_epoch": "00" * 16}, "owner epoch"),
        ({"qe_isvsvn": -1}, "QE ISVSVN"),
        ({"tcb_levels": [TcbLevel((0,) * 16, 0, "UpToDate")]}, "at least one TCB level"),
        ({"pck_revoked": "no"}, "pck_revoked"),
    ],
)
def test_config_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PlatformError, match=message):
        PlatformConfig(**changes)


def test_tcb_level_validation() -> None:
    with pytest.raises(PlatformError, match="16 SGX"):
        TcbLevel((1,) * 15, 0, "UpToDate")
    with pytest.raises(PlatformError, match="TCB status"):
        TcbLevel((1,) * 16, 0, "Good")
    with pytest.raises(PlatformError, match="advisory"):
        TcbLevel((1,) * 16, 0, "OutOfDate", ("a,b",))


def test_derive_secret(tmp_path: Path) -> None:
    platform = make_platform(tmp_path / "p.json")
    a = platform.derive_secret("haven/test/a")
    assert len(a) == 32 and a == platform.derive_secret("haven/test/a")
    assert a != platform.derive_secret("haven/test/b")
    assert len(platform.derive_secret("haven/test/a", 48)) == 48
    # derive_secret's labels live in their own namespace: no label yields a fuse key.
    for fuse in FuseKey:
        assert platform.derive_secret(fuse.value, 16) != platform.fuse_key(fuse)
    with pytest.raises(ValueError, match="label"):
        platform.derive_secret("")


# -- the CLI ---------------------------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_init_show_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.json"
    code, out, _ = _run(
        capsys,
        "sim",
        "platform",
        "init",
        "--platform",
        str(path),
        "--cpusvn",
        "01" * 16,
        "--pcesvn",
        "11",
        "--qe-svn",
        "6",
        "--fmspc",
        "00a067110000",
    )
    assert code == 0 and "created simulated platform" in out and _mode(path) == 0o600
    cfg = SimPlatform.open(path).config
    assert (cfg.cpusvn, cfg.pcesvn, cfg.qe_isvsvn, cfg.fmspc) == (
        b"\x01" * 16,
        11,
        6,
        bytes.fromhex("00a067110000"),
    )
    assert cfg.tcb_status() == "UpToDate"

    code, _, err = _run(capsys, "sim", "platform", "init", "--platform", str(path))
    assert code == 1 and "already exists" in err and err.count("\n") == 1
    code, _, _ = _run(capsys, "sim", "platform", "init", "--platform", str(path), "--force")
    assert code == 0 and SimPlatform.open(path).config.cpusvn == DEFAULT_CPUSVN

    doc = json.loads(path.read_text())
    code, out, _ = _run(capsys, "sim", "platform", "show", "--platform", str(path))
    assert code == 0 and "UpToDate" in out and DEFAULT_CPUSVN.hex() in out
    code, js, _ = _run(capsys, "sim", "platform", "show", "--platform", str(path), "--json")
    shown = json.loads(js)
    assert shown["cpusvn"] == DEFAULT_CPUSVN.hex() and shown["tcb_status"] == "UpToDate"
    for secret in (doc["fused_secret"], doc["config"]["owner_epoch"], "PRIVATE KEY"):
        assert secret not in out and secret not in js


def test_cli_show_uses_the_environment_path(capsys: pytest.CaptureFixture[str], platform_path: Path) -> None:
    code, out, _ = _run(capsys, "sim", "platform", "show")
    assert code == 0 and str(platform_path) in out and platform_path.is_file()


def test_cli_tcb_levels_revocation_and_update(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.json"
    make_platform(path)
    newer = "0d0d0303ff010c000000000000000000:14:UpToDate"
    mine = DEFAULT_CPUSVN.hex() + ":13:OutOfDate:INTEL-SA-00615,INTEL-SA-00828"
    code, out, _ = _run(
        capsys,
        "sim",
        "platform",
        "tcb",
        "--platform",
        str(path),
        "--level",
        newer,
        mine,
        "--revoke-pck",
        "--evaluation-number",
        "18",
    )
    assert code == 0
    cfg = SimPlatform.open(path).config
    assert [lv.status for lv in cfg.tcb_levels] == ["UpToDate", "OutOfDate"]
    assert cfg.tcb_levels[1].advisory_ids == ("INTEL-SA-00615", "INTEL-SA-00828")
    assert cfg.tcb_status() == "OutOfDate" and cfg.pck_revoked and cfg.tcb_evaluation_data_number == 18

    assert _run(capsys, "sim", "platform", "tcb", "--platform", str(path), "--unrevoke-pck")[0] == 0
    assert not SimPlatform.open(path).config.pck_revoked

    code, out, _ = _run(
        capsys,
        "sim",
        "platform",
        "update",
        "--platform",
        str(path),
        "--cpusvn",
        "0d0d0303ff010c000000000000000000",
        "--pcesvn",
        "14",
    )
    assert code == 0 and "UpToDate" in out
    assert SimPlatform.open(path).config.tcb_status() == "UpToDate"


@pytest.mark.parametrize(
    "argv",
    [
        ["init", "--cpusvn", "00"],
        ["init", "--cpusvn", "zz" * 16],
        ["init", "--pcesvn", "65536"],
        ["init", "--qe-svn", "-1"],
        ["init", "--fmspc", "0011"],
        ["tcb"],
        ["tcb", "--level", "00" * 16],
        ["tcb", "--level", "00" * 15 + ":1:UpToDate"],
        ["tcb", "--level", "00" * 16 + ":x:UpToDate"],
        ["tcb", "--level", "00" * 16 + ":1:Great"],
        ["tcb", "--level", "00" * 16 + ":1:OutOfDate:bad advisory"],
        ["tcb", "--level", "00" * 16 + ":1:OutOfDate:A:B"],
        ["tcb", "--revoke-pck", "--unrevoke-pck"],
        ["tcb", "--evaluation-number", "-2"],
        ["update"],
        ["update", "--cpusvn", "1"],
    ],
)
def test_cli_bad_arguments_are_one_line_usage_errors(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cli.json"
    code, out, err = _run(capsys, "sim", "platform", *argv, "--platform", str(path))
    assert code == 2 and err.startswith("haven: error: ") and err.count("\n") == 1
    assert "Traceback" not in err and not out


def test_cli_refuses_a_world_readable_platform(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.json"
    make_platform(path)
    path.chmod(0o644)
    for sub in ("show", "tcb --revoke-pck", "update --pcesvn 1"):
        code, _, err = _run(capsys, "sim", "platform", *sub.split(), "--platform", str(path))
        assert code == 1 and "chmod 600" in err and err.count("\n") == 1

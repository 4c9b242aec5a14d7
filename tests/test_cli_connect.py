"""`haven connect HOST:PORT`: verify an enclave over RA-TLS, then send or pipe; refusals and usage
mistakes as one line (or one JSON verdict), never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from haven.attest.verify import fingerprint
from haven.cli.main import main
from haven.tee.sim.pki import root_ca_certificate
from tests.ratls_support import LoopbackServer, World, make_world

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("cli-connect"))


@pytest.fixture(scope="module")
def server(world: World):
    with LoopbackServer(world.identity()) as s:
        yield s


def _run(capsys: pytest.CaptureFixture[bytes], *argv: str | Path) -> tuple[int, bytes, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err.decode()


def _args(world: World, port: int, policy: Path | None = None) -> list[str | Path]:
    return [
        "connect",
        f"127.0.0.1:{port}",
        "--policy",
        policy or world.policy(),
        "--collateral",
        world.collateral_path,
        "--timeout",
        "5",
    ]


def _one_line_error(err: str, text: str) -> None:
    assert err.startswith("haven: error: ") and err.count("\n") == 1, err
    assert text in err and "Traceback" not in err, err


def test_send_prints_the_identity_and_the_reply(
    capsysbinary: pytest.CaptureFixture[bytes], world: World, server: LoopbackServer
) -> None:
    code, out, err = _run(capsysbinary, *_args(world, server.port), "--send", "héllo")
    assert code == 0, err
    assert out == "echo:héllo".encode()  # standard output carries only the enclave's bytes
    assert f"mrenclave   {world.mrenclave.hex()}" in err
    assert f"mrsigner    {world.enclave.mrsigner.hex()}" in err
    assert "tcb_status  UpToDate" in err and "ear_status  warning" in err
    assert "tcg-dice extension (2.23.133.5.4.9)" in err


def test_send_as_json(
    capsysbinary: pytest.CaptureFixture[bytes], world: World, server: LoopbackServer
) -> None:
    code, out, err = _run(capsysbinary, *_args(world, server.port), "--send", "ping", "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["verified"] is True and doc["reply"] == "echo:ping"
    assert doc["measurements"]["mrenclave"] == world.mrenclave.hex()
    assert doc["ratls_extension"] == "tcg-dice" and doc["ear"]["ear.status"] == "warning"
    assert doc["peer"] == f"127.0.0.1:{server.port}"


def test_another_mrenclave_is_refused(
    capsysbinary: pytest.CaptureFixture[bytes], world: World, server: LoopbackServer
) -> None:
    before = len(server.received)
    policy = world.policy("other.json", mrenclave="ee" * 32)
    code, out, err = _run(capsysbinary, *_args(world, server.port, policy), "--send", "secret")
    assert code == 1 and out == b""
    _one_line_error(err, "[policy] policy sgx.mrenclave")
    code, out, err = _run(capsysbinary, *_args(world, server.port, policy), "--send", "secret", "--json")
    assert code == 1 and err == ""
    doc = json.loads(out)
    assert doc == {"verified": False, "error": "policy", "message": doc["message"]}
    assert len(server.received) == before  # nothing was sent to a refused peer


def test_a_root_given_must_be_pinned_by_the_policy(
    capsysbinary: pytest.CaptureFixture[bytes], world: World, server: LoopbackServer
) -> None:
    root = root_ca_certificate(world.platform)
    policy = world.work / "fingerprint.json"
    policy.write_text(
        json.dumps(
            {
                "trusted_roots": [{"name": "haven-simulation", "sha256": fingerprint(root).hex()}],
                "sgx": {"mrenclave": world.mrenclave.hex()},
            }
        )
    )
    code, out, err = _run(
        capsysbinary, *_args(world, server.port, policy), "--root", world.root_path, "--send", "x"
    )
    assert code == 0 and out == b"echo:x", err
    # Without --root a fingerprint has nothing to match.
    code, out, err = _run(capsysbinary, *_args(world, server.port, policy), "--send", "x")
    assert code == 1
    _one_line_error(err, "only fingerprints")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("localhost", "is not HOST:PORT"),
        ("localhost:", "is not HOST:PORT"),
        ("localhost:0", "port 0 is not in 1..65535"),
        ("localhost:65536", "port 65536"),
        ("::1:443", "is not HOST:PORT"),
        ("[::1]", "is not HOST:PORT"),
        ("a b:1", "is not HOST:PORT"),
    ],
)
def test_bad_targets(
    capsysbinary: pytest.CaptureFixture[bytes], world: World, target: str, message: str
) -> None:
    argv = ["connect", target, "--policy", str(world.policy()), "--collateral", str(world.collateral_path)]
    code, out, err = _run(capsysbinary, *argv)
    assert code == 2 and out == b""
    _one_line_error(err, message)


@pytest.mark.parametrize(
    ("flag", "value"), [("--timeout", "0"), ("--timeout", "soon"), ("--now", "yesterday")]
)
def test_bad_options(
    capsysbinary: pytest.CaptureFixture[bytes], world: World, server: LoopbackServer, flag: str, value: str
) -> None:
    code, _, err = _run(capsysbinary, *_args(world, server.port), flag, value)
    assert code == 2
    _one_line_error(err, flag)


def test_nothing_listening(capsysbinary: pytest.CaptureFixture[bytes], world: World) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    code, out, err = _run(capsysbinary, *_args(world, port), "--send", "x")
    assert code == 1 and out == b""
    _one_line_error(err, f"cannot connect to 127.0.0.1:{port}")


def test_unusable_inputs(
    capsysbinary: pytest.CaptureFixture[bytes], world: World, server: LoopbackServer, tmp_path: Path
) -> None:
    code, _, err = _run(capsysbinary, *_args(world, server.port, tmp_path / "missing.json"))
    assert code == 1
    _one_line_error(err, "missing.json")
    bad = tmp_path / "collateral.json"
    bad.write_text("{}")
    argv = ["connect", f"127.0.0.1:{server.port}", "--policy", str(world.policy()), "--collateral", str(bad)]
    code, _, err = _run(capsysbinary, *argv)
    assert code == 1
    _one_line_error(err, "[malformed] collateral")
    code, _, err = _run(capsysbinary, *_args(world, server.port), "--root", tmp_path / "nothing.der")
    assert code == 1
    _one_line_error(err, "nothing.der")
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"not a certificate")
    code, _, err = _run(capsysbinary, *_args(world, server.port), "--root", garbage)
    assert code == 1
    _one_line_error(err, "[malformed] --root")


def test_a_server_without_evidence(capsysbinary: pytest.CaptureFixture[bytes], world: World) -> None:
    from tests.ratls_support import plain_identity

    with LoopbackServer(plain_identity()) as plain:
        code, _, err = _run(capsysbinary, *_args(world, plain.port), "--send", "x")
    assert code == 1
    _one_line_error(err, "[no-evidence]")


def test_pipes_a_regular_file_on_stdin(
    capsysbinary: pytest.CaptureFixture[bytes],
    world: World,
    server: LoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "input.txt"
    data.write_bytes(b"from a file\n")
    with open(data) as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        code, out, err = _run(capsysbinary, *_args(world, server.port))
    assert code == 0, err
    assert out == b"echo:from a file\n"
    assert world.mrenclave.hex() in err


def test_pipes_stdin_and_stdout_between_processes(world: World, server: LoopbackServer) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [str(a) for a in _args(world, server.port)]
    done = subprocess.run(
        [sys.executable, "-m", "haven", *args, "--json"],
        input=b"through a pipe",
        capture_output=True,
        timeout=60,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"echo:through a pipe"
    identity = json.loads(done.stderr.decode().splitlines()[0])
    assert identity["measurements"]["mrenclave"] == world.mrenclave.hex()

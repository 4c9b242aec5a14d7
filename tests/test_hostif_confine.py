"""Confinement: after ``confine()``, the process computes and talks to its channel, and nothing else."""

from __future__ import annotations

import ctypes
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from haven.shield import confine as confine_module
from haven.shield.confine import ConfinementError, confine, seccomp_available

REPO = Path(__file__).resolve().parents[1]


def test_confine_refuses_without_seccomp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(confine_module, "_kernel_has_seccomp", lambda: False)
    assert not seccomp_available()
    with pytest.raises(ConfinementError, match="no seccomp"):
        confine(3)


def test_confine_refuses_without_libseccomp(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: object, **kw: object) -> None:
        raise OSError("libseccomp.so.2: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert not seccomp_available()
    with pytest.raises(ConfinementError, match="libseccomp2"):
        confine(3)


@pytest.mark.skipif(not seccomp_available(), reason="this kernel has no seccomp")
def test_a_confined_process_computes_and_reaches_nothing_else() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.confine_probe", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        theirs.close()
        out, err = proc.communicate(timeout=60)
        data = b""
        while chunk := ours.recv(65536):
            data += chunk
    assert proc.returncode == 0, err.decode()
    assert out == b""  # stdout was refused, not written
    report = json.loads(data)
    for denied in ("open", "socket", "connect", "execve", "fork", "stdout", "stdin", "listdir", "unlink"):
        assert report[denied] == "EPERM", denied
    assert report["wasm_add"] == 42 and report["wasm_fill"] == 7 and report["wasm_trap"] == "trapped"
    assert report["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert report["aesgcm"] and report["random"] == 16 and report["thread"] is True

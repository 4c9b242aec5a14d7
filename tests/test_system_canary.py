"""The canary: a secret made inside the enclave leaves it only encrypted.

``tests/apps/c/canary_server.c`` draws a secret from ``random_get``, writes it to its encrypted mount,
fsyncs, and sends it over its RA-TLS listener; the whole system runs it (``run_bundle``, two processes,
the enclave confined). The secret, and every 16-byte run of it, is in none of the bytes the host relayed,
none of the blocks it wrote, and nowhere in the image file — yet the client and the owner (with the image
key) each get exactly the secret.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from haven.attest.errors import AttestationError
from haven.cli.main import main
from haven.shield.confine import seccomp_available
from tests.system_support import CANARY, SECRET_HEX, System, image_bytes, leaks, make_system, run_system

pytestmark = [
    pytest.mark.skipif(not CANARY.exists(), reason="scripts/build-test-apps has not been run"),
    pytest.mark.skipif(not seccomp_available(), reason="this kernel has no seccomp filter mode"),
]


@pytest.fixture
def system(tmp_path: Path, platform_path: Path) -> System:
    return make_system(tmp_path / "system", platform_path)


def test_the_secret_reaches_the_client_and_the_image_and_nothing_else(
    system: System, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run = run_system(system)
    assert run.host_error is None, run.host_error
    assert run.client_error is None, (run.client_error, run.stderr)
    assert run.code == 0, run.stderr
    assert run.stdout == "canary served\n"
    assert run.peer_mrenclave == system.mrenclave
    received = run.received
    assert received is not None and re.fullmatch(rb"[0-9a-f]{%d}\n" % SECRET_HEX, received), received
    secret = received[:-1]
    assert run.recorder is not None and run.adversary is not None
    relayed = b"".join(run.recorder.relayed)
    assert len(relayed) > 1000  # the handshake and the record did pass through the host
    assert run.recorder.blocks  # and the file's blocks were written through it
    assert not leaks(secret, run.recorder.relayed)
    assert not leaks(secret, run.recorder.blocks)
    assert not leaks(secret, run.adversary.seen)
    assert not leaks(secret, [image_bytes(system)])
    assert not leaks(secret, [run.stdout.encode(), run.stderr.encode()])
    # The owner, with the image key, reads back exactly what the client was sent.
    assert system.secret_in_image() == received
    dest = tmp_path / "got.txt"
    capfd.readouterr()
    argv = ["image", "get", str(system.image), "/secret.txt", str(dest), "--key", str(system.key_file)]
    assert main(argv) == 0
    assert dest.read_bytes() == received


def test_each_run_makes_a_new_secret(system: System) -> None:
    # The secret comes from the enclave's randomness, not from anything measured: two runs of the same
    # bundle (the same MRENCLAVE) send different secrets.
    first = run_system(system)
    second = run_system(system)
    assert first.code == second.code == 0, (first.stderr, second.stderr)
    assert first.received and second.received and first.received != second.received
    assert system.secret_in_image() == second.received


def test_the_leak_check_can_fail() -> None:
    secret = bytes(range(48))
    assert leaks(secret, [b"xx" + secret[10:26] + b"yy"])
    assert leaks(secret, [b"x" + secret[3:19]])  # an unaligned run still holds an aligned 8-byte piece
    assert not leaks(secret, [secret[0:7], secret[20:27]])


def test_a_client_pinned_to_another_enclave_gets_nothing(system: System) -> None:
    doc = json.loads(system.policy.read_text())
    doc["sgx"]["mrenclave"] = "ab" * 32
    system.policy.write_text(json.dumps(doc))
    run = run_system(system, timeout=20)
    assert isinstance(run.client_error, AttestationError), run.client_error
    assert run.received is None
    assert run.code == 1  # the application's connection broke when the client refused it
    secret = system.secret_in_image()
    assert secret is not None and len(secret) == SECRET_HEX + 1
    assert run.recorder is not None and not leaks(secret[:-1], run.recorder.relayed)

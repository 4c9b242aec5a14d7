"""The adversary matrix for the network path, through the whole system: the canary server
(``tests/apps/c/canary_server.c``) run by ``run_bundle`` in a confined enclave process, the host lying
in one answer to ``net_accept``, ``net_read``, ``net_write``, ``net_poll``, ``quote`` or ``clock_now``,
and a ``haven.ratls`` client pinned to the bundle.

In every cell either (a) the client receives exactly the secret the enclave stored, or (b) the client's
connection fails (a TLS error, an RA-TLS refusal, a broken or refused connection) and the enclave fails
stop naming the violation (exit 70) or exits with an error; in all cells no 16-byte run of the secret
reaches the host, and the cell ends in bounded time. ``docs/host-interface.md`` ("The network path under
attack") records each cell's outcome.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from haven.host.adversary import Fault, Injection, Plan, applies
from haven.shield.confine import seccomp_available
from haven.shield.hostif import BY_NAME, EXIT_VIOLATION
from tests.system_support import CANARY, SECRET_HEX, Run, System, image_bytes, leaks, make_system, run_system

pytestmark = [
    pytest.mark.skipif(not CANARY.exists(), reason="scripts/build-test-apps has not been run"),
    pytest.mark.skipif(not seccomp_available(), reason="this kernel has no seccomp filter mode"),
]

F = Fault
CALLS = ("net_accept", "net_read", "net_write", "net_poll", "quote", "clock_now")
FAULTS = (F.CORRUPT, F.TRUNCATE, F.EXTEND, F.REPLAY, F.DROP, F.OUT_OF_RANGE)
GRACE = 2.0  # how long the enclave waits for an answer before it fails stop
BOUND = 25.0  # seconds: a cell that takes longer has hung

# Representative cells for the default run, with the outcome each must have: "secret" (a), "refused" (b).
DEFAULT = [
    ("net_read", F.TRUNCATE, "secret"),  # a short read is ordinary: TLS reassembles its records
    ("net_read", F.CORRUPT, "refused"),  # a flipped bit in the client's handshake or record
    ("net_write", F.CORRUPT, "refused"),  # the host's count of what it sent is checked
    ("net_accept", F.OUT_OF_RANGE, "refused"),  # a handle already open
    ("quote", F.CORRUPT, "refused"),  # the enclave's own evidence, spoilt on its way back
    # No answer: fail stop after the grace, not a hang. Which poll is dropped depends on timing, so the
    # client may already hold the secret when it strikes: either outcome, but always the named fail stop.
    ("net_poll", F.DROP, "either"),
]


def _plan(honest: Run, call: str, fault: Fault) -> Plan:
    """The fault at an occurrence of ``call`` the honest run answered with results (an error answer
    has nothing to spoil); a replay at a later one, so there is an earlier answer to replay."""
    assert honest.recorder is not None
    answered = honest.recorder.answered.get(call, [])
    ok = [i for i, good in enumerate(answered) if good] or [0]
    at = ok[1] if fault is F.REPLAY and len(ok) > 1 else ok[0]
    return Plan(seed=len(call) * 31 + list(Fault).index(fault), injections=(Injection(call, fault, at),))


def _cell(tmp_path: Path, platform_path: Path, call: str, fault: Fault) -> tuple[System, Run]:
    system = make_system(tmp_path / "system", platform_path)
    honest = run_system(system)
    assert honest.code == 0 and honest.received is not None, honest.stderr
    # A fresh image for the attacked run, so what it stores is its own.
    attacked = make_system(tmp_path / "attacked", platform_path)
    run = run_system(attacked, _plan(honest, call, fault), grace=GRACE, timeout=BOUND)
    return attacked, run


def check(system: System, run: Run) -> str:
    """The cell's outcome, "secret" or "refused", after asserting it is one of the two allowed and that
    nothing leaked and nothing hung."""
    assert run.host_error is None, run.host_error
    assert run.elapsed < BOUND + 5, "the cell took too long"
    assert "Traceback" not in run.stderr, run.stderr
    stored = system.secret_in_image()
    secret = (run.received or stored or b"")[:SECRET_HEX]
    if secret:
        assert not leaks(secret, run.seen()), "the secret reached the host"
        assert not leaks(secret, [image_bytes(system)])
        assert not leaks(secret, [run.stdout.encode(), run.stderr.encode()])
    if run.code == EXIT_VIOLATION:
        assert run.violations, run.stderr  # a fail stop names its violation
    if run.received is not None:
        # (a): what the client got is exactly what the enclave stored — never wrong plaintext.
        assert run.client_error is None
        assert stored is not None and run.received == stored, (run.received, stored)
        assert run.code in (0, 1, EXIT_VIOLATION), run.stderr
        return "secret"
    # (b): the client's connection failed, and the enclave stopped with an error or a fail stop.
    assert run.client_error is not None
    assert run.code in (1, EXIT_VIOLATION), (run.code, run.stderr)
    return "refused"


@pytest.mark.parametrize(("call", "fault", "outcome"), DEFAULT, ids=lambda x: getattr(x, "value", x))
def test_cell(tmp_path: Path, platform_path: Path, call: str, fault: Fault, outcome: str) -> None:
    system, run = _cell(tmp_path, platform_path, call, fault)
    assert run.adversary is not None
    assert [(n, f) for n, _, f in run.adversary.applied] == [(call, fault)], "the fault must strike once"
    # `check` enforces what every cell must satisfy: exactly the secret or a refusal, nothing leaked, a
    # named fail stop, bounded time. Which outcome a cell ends in can depend on timing (the occurrence
    # struck is chosen from an honest run), so the column is the usual outcome, asserted only as "either".
    got = check(system, run)
    assert got in ("secret", "refused")
    if outcome == "either":
        assert run.code == EXIT_VIOLATION, (run.code, run.stderr)
    if got == "refused" and run.code == EXIT_VIOLATION:
        assert run.violations[0].startswith(f"{call}: "), run.violations


def test_the_check_refuses_wrong_plaintext(tmp_path: Path, platform_path: Path) -> None:
    # The check itself must fail on a wrong answer: a client that "received" other bytes than the
    # enclave stored is caught.
    system = make_system(tmp_path / "system", platform_path)
    run = run_system(system)
    assert check(system, run) == "secret"
    assert run.received is not None
    run.received = run.received[:-2] + b"0\n" if run.received[-2:-1] != b"0" else run.received[:-2] + b"1\n"
    with pytest.raises(AssertionError):
        check(system, run)


SOAK = [(c, f) for c in CALLS for f in FAULTS if applies(f, BY_NAME[c])]


@pytest.mark.soak
@pytest.mark.parametrize(("call", "fault"), SOAK, ids=lambda x: getattr(x, "value", x))
def test_cell_soak(tmp_path: Path, platform_path: Path, call: str, fault: Fault) -> None:
    system, run = _cell(tmp_path, platform_path, call, fault)
    print(f"{call} {fault.value}: {check(system, run)} exit {run.code} {run.violations[:1]}")

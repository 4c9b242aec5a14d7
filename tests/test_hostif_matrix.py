"""The adversary matrix: every call of the host interface x every fault that applies to it.

In each cell the program (``tests/hostif_program.py``) either finishes with exactly the results an
honest host gives, or stops naming the violation — never a wrong answer, never the secret in what the
host saw, never a hang. ``docs/host-interface.md`` lists the harmless cells and says why.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import pytest

from haven.host.adversary import AIMED, GENERIC, Fault, Plan, applies, matrix
from haven.shield.hostif import BY_NAME, CALLS, EXIT_VIOLATION
from haven.shield.hostwire import Call
from tests.hostif_program import GREETING, expected
from tests.hostif_support import Outcome, World, leaks, run_in_process

F = Fault
# Cells where the fault does no harm (docs/host-interface.md says why for each).
BENIGN = {(c.name, F.DELAY) for c in CALLS} | {
    ("clock_now", F.TIME_BACKWARDS), ("clock_now", F.REPLAY),
    ("net_read", F.TRUNCATE), ("console_read", F.TRUNCATE), ("net_poll", F.TRUNCATE),
    ("blk_flush", F.REPLAY), ("net_close", F.REPLAY), ("counter_advance", F.REPLAY),
    ("console_read", F.CORRUPT),
}  # fmt: skip
# Cells where the lie amounts to the host refusing service: a handle it never issued.
REFUSED = {("net_accept", F.CORRUPT), ("net_connect", F.CORRUPT)}
# Who names the violation, where it is not the call itself: the storage's authentication, above the
# interface; or a later call, where the lie is only shown up by what the host answers next (a first
# counter value is believed until the host refuses to advance it).
NAMED = {
    ("blk_read", F.CORRUPT): "storage",
    ("blk_read", F.SWAP_BLOCKS): "storage",
    ("blk_read", F.OLD_IMAGE): "storage",
    ("counter_read", F.CORRUPT): "counter_advance",
}
DROP_GRACE = 0.25
GRACE = 5.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World.create(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def counts(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """How often an honest run makes each call (a fault strikes one of those occurrences)."""
    outcome = run_in_process(world, None, tmp_path_factory.mktemp("honest"))
    assert outcome.code == 0
    return outcome.counts


def check_cell(world: World, name: str, fault: Fault, o: Outcome, grace: float) -> None:
    """The cell's outcome is the one the tables above say — and in no case a wrong answer, a leak or
    a hang."""
    assert o.host_errors == []
    assert o.elapsed < grace + 3, "the cell took too long"
    assert not leaks(world.secrets.secret, o.seen), "the secret reached the host"
    honest = expected(world.secrets)
    if (name, fault) in BENIGN:
        assert o.code == 0, o.console
        if name == "console_read":  # the console's input is the host's to give, in plaintext
            honest["console"] = o.observed and o.observed["console"]
        assert o.observed == honest
        assert o.console == ""
    elif (name, fault) in REFUSED:
        assert o.code == 1
        assert re.fullmatch(r"haven: error: host call \w+ failed: [A-Z]+\n", o.console), o.console
    else:
        assert o.code == EXIT_VIOLATION, (o.code, o.console)
        assert o.observed is None
        where = NAMED.get((name, fault), name)
        assert o.violation is not None and o.violation.startswith(f"{where}: "), o.console
        assert o.console.count("\n") == 1
        assert o.key_wiped


def test_honest_host(world: World, tmp_path: Path) -> None:
    o = run_in_process(world, None, tmp_path)
    assert (o.code, o.console, o.key_wiped) == (0, "", False)
    assert o.observed == expected(world.secrets)
    assert o.stdout == GREETING
    assert not leaks(world.secrets.secret, o.seen)
    assert not leaks(world.secrets.secret, [(tmp_path / "image").read_bytes()])
    assert set(o.counts) == {c.name for c in CALLS if c.answered}, "the program must make every call"


def test_the_leak_check_can_fail(world: World) -> None:
    s = world.secrets.secret
    assert leaks(s, [b"xx" + s[100:116] + b"yy"])
    assert not leaks(s, [s[100:107], s[200:207]])


def test_the_matrix_covers_every_call_and_fault() -> None:
    cells = matrix()
    assert {f for _, f in cells} == set(Fault)
    assert {c.name for c, _ in cells} == {c.name for c in CALLS if c.answered}
    assert len(cells) == len(GENERIC) * sum(c.answered for c in CALLS) + sum(len(v) for v in AIMED.values())
    assert not applies(F.CORRUPT, BY_NAME["exit"])  # exit is not answered: nothing to spoil


def _seed(call: Call, fault: Fault) -> int:
    return zlib.crc32(f"{call.name}/{fault.value}".encode())


def _id(x: Any) -> str:
    return str(getattr(x, "name", getattr(x, "value", x)))


@pytest.mark.parametrize(("call", "fault"), matrix(), ids=_id)
def test_cell(world: World, counts: dict[str, int], tmp_path: Path, call: Call, fault: Fault) -> None:
    grace = DROP_GRACE if fault is F.DROP else GRACE
    plan = Plan.single(call.name, fault, counts, _seed(call, fault))
    o = run_in_process(world, plan, tmp_path, grace=grace)
    assert [(name, f) for name, _, f in o.applied] == [(call.name, fault)], "the fault must strike once"
    check_cell(world, call.name, fault, o, grace)


@pytest.mark.parametrize("seed", range(6))
def test_scattered_faults(world: World, counts: dict[str, int], tmp_path: Path, seed: int) -> None:
    """Several faults in one run: the first to bite decides; the outcome is still one of the three."""
    plan = Plan.scattered(seed, counts, faults=3)
    o = run_in_process(world, plan, tmp_path, grace=DROP_GRACE)
    _any_allowed(world, o)


def _any_allowed(world: World, o: Outcome) -> None:
    assert not leaks(world.secrets.secret, o.seen)
    assert o.elapsed < 5
    honest: dict[str, Any] = expected(world.secrets)
    if o.code == 0:
        if any(name == "console_read" for name, _, _ in o.applied):
            honest["console"] = o.observed and o.observed["console"]
        assert o.observed == honest
    elif o.code == 1:
        assert re.fullmatch(r"haven: error: host call \w+ failed: [A-Z]+\n", o.console), o.console
    else:
        assert o.code == EXIT_VIOLATION and o.violation is not None and o.key_wiped


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(200))
def test_scattered_faults_soak(world: World, counts: dict[str, int], tmp_path: Path, seed: int) -> None:
    o = run_in_process(world, Plan.scattered(1000 + seed, counts, faults=1 + seed % 4), tmp_path,
                       grace=DROP_GRACE)  # fmt: skip
    _any_allowed(world, o)

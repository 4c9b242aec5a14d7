"""The enclave and the host as two processes: the runtime, the confined enclave, and fail-stop for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from haven.host import runtime
from haven.host.adversary import Fault, Plan, matrix
from haven.host.backend import LocalBackend
from haven.shield.confine import ConfinementError, seccomp_available
from haven.shield.hostif import EXIT_VIOLATION
from tests.hostif_program import GREETING, expected
from tests.hostif_support import World, run_in_process, run_in_processes
from tests.test_hostif_matrix import DROP_GRACE, GRACE, _seed, check_cell

needs_seccomp = pytest.mark.skipif(not seccomp_available(), reason="this kernel has no seccomp")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World.create(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def counts(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    return run_in_process(world, None, tmp_path_factory.mktemp("honest")).counts


@needs_seccomp
def test_a_confined_enclave_runs_the_whole_program(world: World, tmp_path: Path) -> None:
    o = run_in_processes(world, None, tmp_path)
    assert (o.code, o.console) == (0, "")
    assert o.observed is not None
    assert o.observed.pop("confined") is True  # open() was refused by the filter inside the run
    assert o.observed == expected(world.secrets)
    assert o.stdout.startswith(GREETING)


def test_unconfined_when_told(world: World, tmp_path: Path) -> None:
    o = run_in_processes(world, None, tmp_path, confine=False)
    assert o.code == 0 and o.observed is not None
    assert o.observed.pop("confined") is False
    assert o.observed == expected(world.secrets)


def test_refuses_to_run_unconfined_without_seccomp(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "seccomp_available", lambda: False)
    with pytest.raises(ConfinementError, match="--unconfined"):
        run_in_processes(world, None, tmp_path)


# A few cells through the real processes: the fail-stop line on the enclave's stderr after the wipe
# hooks ran, exit status 70; or, for a harmless fault, the honest results.
CELLS = [
    ("blk_read", Fault.SWAP_BLOCKS),
    ("blk_read", Fault.OLD_IMAGE),
    ("counter_read", Fault.STALE_COUNTER),
    ("quote", Fault.CORRUPT),
    ("net_read", Fault.REPLAY),
    ("blk_write", Fault.DROP),
    ("clock_now", Fault.TIME_BACKWARDS),
    ("net_read", Fault.TRUNCATE),
]


@needs_seccomp
@pytest.mark.parametrize(("name", "fault"), CELLS, ids=lambda x: getattr(x, "value", x))
def test_cells_across_processes(
    world: World, counts: dict[str, int], tmp_path: Path, name: str, fault: Fault
) -> None:
    _process_cell(world, counts, tmp_path, name, fault)


def _process_cell(world: World, counts: dict[str, int], tmp_path: Path, name: str, fault: Fault) -> None:
    call = next(c for c, f in matrix() if c.name == name and f is fault)
    grace = DROP_GRACE * 2 if fault is Fault.DROP else GRACE
    o = run_in_processes(world, Plan.single(name, fault, counts, _seed(call, fault)), tmp_path, grace=grace)
    assert [(n, f) for n, _, f in o.applied] == [(name, fault)]
    if o.code == EXIT_VIOLATION:
        lines = o.console.splitlines()
        assert lines[0] == "test: keys wiped" and lines[1].startswith("haven: host violation: ")
        o.console = lines[1] + "\n"
        o.key_wiped = True
    elif o.observed is not None:
        assert o.observed.pop("confined") is True
    check_cell(world, name, fault, o, grace + 1)  # a process takes a little longer to start


@pytest.mark.soak
@needs_seccomp
@pytest.mark.parametrize(("name", "fault"), [(c.name, f) for c, f in matrix()],
                         ids=lambda x: getattr(x, "value", x))  # fmt: skip
def test_every_cell_across_processes(
    world: World, counts: dict[str, int], tmp_path: Path, name: str, fault: Fault
) -> None:
    _process_cell(world, counts, tmp_path, name, fault)


def test_the_runtime_ends_an_enclave_that_never_finishes(world: World, tmp_path: Path) -> None:
    o = run_in_processes(world, None, tmp_path, entry="tests.hostif_program:hang", timeout=1.0, confine=False)
    assert o.code < 0 and o.elapsed < 10


def test_a_malformed_request_ends_the_session(world: World, tmp_path: Path) -> None:
    with pytest.raises(runtime.EnclaveProtocolError, match="malformed request"):
        run_in_processes(world, None, tmp_path, entry="tests.hostif_program:garbage", confine=False)


def test_an_entry_that_does_not_exist(tmp_path: Path) -> None:
    err = tmp_path / "err"
    with err.open("w+b") as f:
        code = runtime.run_enclave("tests.nowhere:entry", [], LocalBackend(), confine=False,
                                   env=runtime.python_path_with(Path(__file__).parents[1]),
                                   stderr=f.fileno(), timeout=30)  # fmt: skip
    assert code == 1
    assert err.read_text().startswith("haven: error: entry 'tests.nowhere:entry': No module named")

"""Each call's rule: an answer that breaks exactly that rule is a violation; an honest one passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from haven.shield.hostif import BY_NAME, MAX_BLOCKS, check_answer
from haven.shield.hostwire import HostViolation, Session, Status
from haven.tee.sgx.structs import TargetInfo
from haven.tee.sim.qe import QuotingEnclave
from tests.sim_helpers import load, make_platform


def judge(name: str, args: tuple[Any, ...], results: tuple[Any, ...] = (), *, status: Status = Status.OK,
          session: Session | None = None) -> tuple[Any, ...]:  # fmt: skip
    return check_answer(session or Session(), BY_NAME[name], args, status, results)


def broken(name: str, args: tuple[Any, ...], results: tuple[Any, ...] = (), *, match: str,
           status: Status = Status.OK, session: Session | None = None) -> None:  # fmt: skip
    with pytest.raises(HostViolation, match=match) as e:
        judge(name, args, results, status=status, session=session)
    assert e.value.call == name
    assert str(e.value).startswith(f"{name}: ")


def test_blk_size() -> None:
    s = Session()
    assert judge("blk_size", (0,), (64, 4096), session=s) == (64, 4096)
    assert s.devices[0] == (64, 4096)
    broken("blk_size", (1,), (64, 4095), match="not a power of two")
    broken("blk_size", (1,), (64, 256), match="not a power of two from 512")
    broken("blk_size", (1,), (64, 1 << 17), match="not a power of two")
    broken("blk_size", (1,), (0, 4096), match="outside")
    broken("blk_size", (1,), (MAX_BLOCKS + 1, 4096), match="outside")
    broken("blk_size", (0,), (65, 4096), session=s, match="changed size")
    broken("blk_size", (0,), (64, 8192), session=s, match="changed size")
    assert judge("blk_size", (0,), (64, 4096), session=s) == (64, 4096)


def test_blk_read_must_be_exactly_the_blocks_asked() -> None:
    s = Session(devices={0: (64, 4096)})
    runs = [(3, 2), (10, 1)]
    assert judge("blk_read", (0, runs), (bytes(3 * 4096),), session=s)
    broken("blk_read", (0, runs), (bytes(3 * 4096 - 1),), session=s, match="exactly 12288")
    broken("blk_read", (0, runs), (bytes(4 * 4096),), session=s, match="exactly 12288")
    broken("blk_read", (1, runs), (bytes(3 * 4096),), session=s, match="never established")
    assert judge("blk_read", (0, runs), status=Status.IO, session=s) == ()


def test_blk_write_acknowledges_every_block() -> None:
    runs = [(0, 2), (7, 3)]
    assert judge("blk_write", (0, runs, bytes(5 * 4096)), (5,)) == (5,)
    broken("blk_write", (0, runs, bytes(5 * 4096)), (4,), match="acknowledged 4 blocks of the 5")
    broken("blk_write", (0, runs, bytes(5 * 4096)), (6,), match="acknowledged 6")


def test_counter_read_holds_the_host_to_what_it_said() -> None:
    s = Session()
    judge("counter_read", (0,), (5,), session=s)
    judge("counter_read", (0,), (5,), session=s)
    broken("counter_read", (0,), (4,), session=s, match="moved from 5 to 4")
    broken("counter_read", (0,), (6,), session=s, match="moved from 5 to 6")
    broken("counter_read", (1,), ((1 << 64) - 1,), match="no room to advance")
    judge("counter_read", (1,), ((1 << 64) - 2,))


def test_counter_advance() -> None:
    s = Session()
    judge("counter_read", (0,), (5,), session=s)
    broken("counter_advance", (0, 5, 6), status=Status.CONFLICT, session=s, match="as expected")
    # A conflict on a value the enclave does not know to be current is the host's to report.
    judge("counter_advance", (0, 4, 6), status=Status.CONFLICT, session=s)
    judge("counter_advance", (1, 4, 6), status=Status.CONFLICT, session=s)
    judge("counter_advance", (0, 5, 6), session=s)
    assert s.counters[0] == 6
    broken("counter_read", (0,), (5,), session=s, match="moved from 6 to 5")


def test_handles_are_new_and_never_reused_while_open() -> None:
    s = Session()
    assert judge("net_listen", (8080,), (1, 8080), session=s) == (1, 8080)
    broken("net_listen", (8080,), (2, 8081), session=s, match="port 8081")
    broken("net_listen", (0,), (2, 0), session=s, match="port 0")
    broken("net_listen", (0,), (2, 65536), session=s, match="port 65536")
    broken("net_listen", (0,), (1, 9000), session=s, match="already open")
    broken("net_listen", (0,), (0, 9000), session=s, match="never valid")
    judge("net_accept", (1,), (2,), session=s)
    broken("net_accept", (1,), (2,), session=s, match="handle 2 is already open")
    broken("net_connect", (b"127.0.0.1:1", 100), (1,), session=s, match="handle 1 is already open")
    broken("net_connect", (b"127.0.0.1:1", 100), (0,), session=s, match="never valid")
    judge("net_close", (2,), session=s)
    assert s.handles == {1: "listener"}
    judge("net_accept", (1,), (2,), session=s)  # closed handles may come back
    judge("net_accept", (1,), status=Status.AGAIN, session=s)


def test_stream_reads_and_writes() -> None:
    judge("net_read", (1, 10), (b"x" * 10,))
    judge("net_read", (1, 10), (b"",))  # end of stream
    broken("net_read", (1, 10), (b"x" * 11,), match="11 bytes for at most 10")
    judge("console_read", (10, 0), (b"line\n",))
    broken("console_read", (4, 0), (b"line\n",), match="5 bytes for at most 4")
    judge("net_write", (1, b"abc"), (3,))
    judge("net_write", (1, b"abc"), (1,))
    judge("net_write", (1, b""), (0,))
    broken("net_write", (1, b"abc"), (4,), match="claims 4 bytes written of 3")
    broken("net_write", (1, b"abc"), (0,), match="claims 0")


def test_net_poll_only_what_was_asked() -> None:
    judge("net_poll", ([1, 2], [3], 10), ([2], [3]))
    judge("net_poll", ([1, 2], [3], 10), ([], []))
    broken("net_poll", ([1, 2], [3], 10), ([4], []), match="readable handle 4 was not asked")
    broken("net_poll", ([1, 2], [3], 10), ([], [1]), match="writable handle 1 was not asked")
    broken("net_poll", ([1, 2], [3], 10), ([2, 2], []), match="listed twice")


def test_clock_never_runs_backwards_and_is_never_negative() -> None:
    s = Session()
    assert judge("clock_now", (), (100,), session=s) == (100,)
    assert judge("clock_now", (), (50,), session=s) == (100,)  # the floor, not the host's step back
    assert judge("clock_now", (), (150,), session=s) == (150,)
    broken("clock_now", (), (-1,), session=s, match="negative time -1")


def test_quote_target_must_be_a_targetinfo() -> None:
    judge("quote_target", (), (TargetInfo().to_bytes(),))
    broken("quote_target", (), (bytes(511),), match="of 511 bytes")
    bad = bytearray(TargetInfo().to_bytes())
    bad[TargetInfo.offset_of("reserved3")] = 1
    broken("quote_target", (), (bytes(bad),), match="does not parse")


def test_a_rule_that_trips_over_a_hostile_value_is_a_violation() -> None:
    # A rule's own failure on garbage is the garbage's fault: stop, do not crash.
    broken("blk_write", (0, [(0, "x")], b""), (1,), match="could not be checked")


@pytest.fixture(scope="module")
def quoting(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, QuotingEnclave]:
    platform = make_platform(Path(tmp_path_factory.mktemp("quote")) / "platform.json")
    return load(platform), QuotingEnclave(platform)


def test_quote_must_carry_this_report_and_verify(quoting: tuple[Any, QuotingEnclave]) -> None:
    enclave, qe = quoting
    report = enclave.ereport(qe.target_info(), bytes(range(64)))
    other = enclave.ereport(qe.target_info(), bytes(64))
    quote = qe.quote(report)
    judge("quote", (report.to_bytes(),), (quote,))
    broken("quote", (other.to_bytes(),), (quote,), match="does not carry the report")
    broken("quote", (report.to_bytes(),), (quote + bytes(4),), match="exactly its own length")
    broken("quote", (report.to_bytes(),), (quote[:-10],), match="does not verify")
    sig_at = 48 + 384 + 4  # header, report body, signature data length (sgx_quote_3.h)
    forged = bytearray(quote)
    forged[sig_at] ^= 1
    broken("quote", (report.to_bytes(),), (bytes(forged),), match="does not verify")
    rebound = bytearray(quote)
    rebound[48 + 320] ^= 1  # REPORTDATA[0] inside the signed body: no longer this report, nor signed
    broken("quote", (report.to_bytes(),), (bytes(rebound),), match="does not carry")
    judge("quote", (report.to_bytes(),), status=Status.INVAL)

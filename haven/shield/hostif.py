"""The host interface, declared once: every call the shield may make of its host, and the rule each
answer must satisfy.

Haven's shield reaches its untrusted host through this table and nothing else (DESIGN.md, "The host
interface"). The shield's stubs (:mod:`haven.shield.hostchannel`), the host's dispatcher
(:mod:`haven.host.dispatcher`), the adversary the tests run, and the table in
``docs/host-interface.md`` are all derived from :data:`CALLS`. Each entry names the call, its numeric
id, its argument and result types (:mod:`haven.shield.hostwire`), the error statuses the host may
give instead of a result, and the *rule*: a function of the arguments, the answer and the
per-session :class:`Session` (devices sized, counters seen, handles issued, the clock's floor) that
says what is wrong with a hostile answer. :func:`check_answer` applies it; a broken rule is a
:class:`HostViolation`, on which the shield fails stop.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from haven.errors import HavenError
from haven.shield.hostwire import (
    EXIT_VIOLATION,
    I64,
    U32,
    U64,
    Bytes,
    Call,
    Checker,
    Effect,
    HostCallError,
    HostViolation,
    Session,
    Status,
    Values,
    WireType,
    runs,
    u64_list,
)
from haven.shield.storage.layout import MAX_BLOCK_SIZE, MIN_BLOCK_SIZE
from haven.tee.sgx.quote import MAX_QUOTE_SIZE
from haven.tee.sgx.structs import Report, TargetInfo

__all__ = ["BY_ID", "BY_NAME", "CALLS", "EXIT_VIOLATION", "Call", "HostCallError", "HostViolation",
           "Session", "Status", "check_answer", "markdown_table"]  # fmt: skip

# Limits of one crossing. Block I/O moves runs of whole blocks, up to MAX_IO bytes a call; a stream
# read or write moves up to MAX_NET bytes.
MAX_IO = 16 << 20
MAX_RUNS = 4096
MAX_NET = 256 << 10
MAX_CONSOLE = 64 << 10
MAX_ADDRESS = 255
MAX_POLL = 256
# A sane bound on an image's length (2^40 blocks: petabytes), checked before anything is sized by it.
MAX_BLOCKS = 1 << 40
# A freshness counter must be able to move on at the next commit (and the store's version is a u64).
MAX_COUNTER = (1 << 64) - 2


# ------------------------------------------------------------------------------------------ rules
# Each returns what is wrong with an accepted-status answer, or None. They run only on answers whose
# frame parsed and whose status the call allows.


def _blk_size(s: Session, a: Values, st: Status, r: Values) -> str | None:
    if st:
        return None
    blocks, size = r
    if not MIN_BLOCK_SIZE <= size <= MAX_BLOCK_SIZE or size & (size - 1):
        return f"block size {size} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
    if not 1 <= blocks <= MAX_BLOCKS:
        return f"{blocks} blocks is outside 1..{MAX_BLOCKS}"
    known = s.devices.get(a[0])
    if known is not None and known != (blocks, size):
        return f"the image changed size while mounted ({known[0]} x {known[1]} -> {blocks} x {size})"
    return None


def _record_size(s: Session, a: Values, st: Status, r: Values) -> Values:
    if not st:
        s.devices.setdefault(a[0], (r[0], r[1]))
    return r


def _blocks_asked(s: Session, dev: int, run_list: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    known = s.devices.get(dev)
    if known is None:
        return None
    return sum(n for _, n in run_list), known[1]


def _blk_read(s: Session, a: Values, st: Status, r: Values) -> str | None:
    if st:
        return None
    asked = _blocks_asked(s, a[0], a[1])
    if asked is None:
        return "blocks read from a device whose size was never established"
    n, size = asked
    if len(r[0]) != n * size:
        return f"{len(r[0])} bytes for {n} blocks of {size} (exactly {n * size} expected)"
    return None


def _blk_write(s: Session, a: Values, st: Status, r: Values) -> str | None:
    if st:
        return None
    n = sum(count for _, count in a[1])
    if r[0] != n:
        return f"acknowledged {r[0]} blocks of the {n} written"
    return None


def _counter_read(s: Session, a: Values, st: Status, r: Values) -> str | None:
    if st:
        return None
    known = s.counters.get(a[0])
    if known is not None and r[0] != known:
        return f"the counter moved from {known} to {r[0]} behind the enclave's back"
    if r[0] > MAX_COUNTER:
        return f"{r[0]} leaves the counter no room to advance"
    return None


def _record_counter(s: Session, a: Values, st: Status, r: Values) -> Values:
    if not st:
        s.counters[a[0]] = r[0]
    return r


def _counter_advance(s: Session, a: Values, st: Status, r: Values) -> str | None:
    known = s.counters.get(a[0])
    if st is Status.CONFLICT and known == a[1]:
        return f"reported a conflict, but the counter is {known}, as expected"
    return None


def _record_advance(s: Session, a: Values, st: Status, r: Values) -> Values:
    if not st:
        s.counters[a[0]] = a[2]
    return r


def _fresh(s: Session, h: int) -> str | None:
    if h == 0:
        return "handle 0 is never valid"
    if h in s.handles:
        return f"handle {h} is already open (handles are never reused while open)"
    return None


def _net_listen(s: Session, a: Values, st: Status, r: Values) -> str | None:
    if st:
        return None
    h, port = r
    if not 1 <= port <= 65535 or (a[0] and port != a[0]):
        return f"port {port} for a listener asked on port {a[0]}"
    return _fresh(s, h)


def _opener(kind: str) -> Effect:
    def record(s: Session, a: Values, st: Status, r: Values) -> Values:
        if not st:
            s.handles[r[0]] = kind
        return r

    return record


def _new_stream(s: Session, a: Values, st: Status, r: Values) -> str | None:
    return None if st else _fresh(s, r[0])


def _at_most(arg: int) -> Checker:
    def check(s: Session, a: Values, st: Status, r: Values) -> str | None:
        if not st and len(r[0]) > a[arg]:
            return f"{len(r[0])} bytes for at most {a[arg]} asked"
        return None

    return check


def _net_write(s: Session, a: Values, st: Status, r: Values) -> str | None:
    if st:
        return None
    if r[0] > len(a[1]) or (a[1] and r[0] == 0):
        return f"claims {r[0]} bytes written of {len(a[1])}"
    return None


def _close(s: Session, a: Values, st: Status, r: Values) -> Values:
    s.handles.pop(a[0], None)
    return r


def _net_poll(s: Session, a: Values, st: Status, r: Values) -> str | None:
    for asked, ready, what in ((a[0], r[0], "readable"), (a[1], r[1], "writable")):
        extra = set(ready) - set(asked)
        if extra:
            return f"{what} handle {min(extra)} was not asked about"
        if len(set(ready)) != len(ready):
            return f"a {what} handle is listed twice"
    return None


def _clock_now(s: Session, a: Values, st: Status, r: Values) -> str | None:
    return f"negative time {r[0]}" if r[0] < 0 else None


def _clock_floor(s: Session, a: Values, st: Status, r: Values) -> Values:
    # Wall clocks legitimately step back (NTP), so an earlier time is not an attack to stop for:
    # the enclave just never sees time run backwards.
    s.clock_floor = max(s.clock_floor, r[0])
    return (s.clock_floor,)


def _quote_target(s: Session, a: Values, st: Status, r: Values) -> str | None:
    if len(r[0]) != TargetInfo.SIZE:
        return f"a TARGETINFO of {len(r[0])} bytes, not {TargetInfo.SIZE}"
    try:
        TargetInfo.from_bytes(r[0])
    except HavenError as e:
        return f"the TARGETINFO does not parse ({e})"
    return None


def _quote(s: Session, a: Values, st: Status, r: Values) -> str | None:
    if st:
        return None
    # Imported here: only a run that asks for a quote pays for the X.509 and ECDSA machinery.
    from haven.attest.dcap.quote import parse_quote
    from haven.attest.dcap.verify import check_quote_signatures, load_pck_chain

    try:
        quote = parse_quote(r[0])
        if quote.tee != "sgx" or quote.padding:
            return "not an SGX quote of exactly its own length"
        body = Report.from_bytes(a[0], strict=False).body.to_bytes()
        if not hmac.compare_digest(quote.sgx_body.to_bytes(), body):
            return "the quote does not carry the report the enclave gave"
        chain = load_pck_chain(quote.pck_chain_pem)
        if not chain:
            return "the quote carries no PCK certificate"
        check_quote_signatures(quote, chain[0])
    except HavenError as e:
        return f"the quote does not verify ({e})"
    return None


# ------------------------------------------------------------------------------------------ table

_NET = frozenset({Status.CONNRESET, Status.PIPE, Status.IO})
_E: frozenset[Status] = frozenset()


def _c(id: int, name: str, args: Sequence[tuple[str, WireType]], results: Sequence[tuple[str, WireType]],
       errors: frozenset[Status], rule: str, attack: str, **kw: Any) -> Call:  # fmt: skip
    return Call(id, name, tuple(args), tuple(results), errors, rule, attack, **kw)


CALLS: tuple[Call, ...] = (
    _c(1, "blk_size", [("dev", U32)], [("blocks", U64), ("block_size", U32)], frozenset({Status.IO}),
       f"block size a power of two, {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}; 1..2^40 blocks; never changes while "
       "mounted",
       "resize an image under the mounted file system", check=_blk_size, effect=_record_size),
    _c(2, "blk_read", [("dev", U32), ("runs", runs(MAX_RUNS))], [("data", Bytes(MAX_IO))],
       frozenset({Status.IO}),
       "exactly the blocks asked for, then every block passes AES-GCM and the Merkle tree",
       "short, long, swapped, stale or forged blocks", check=_blk_read),
    _c(3, "blk_write", [("dev", U32), ("runs", runs(MAX_RUNS)), ("data", Bytes(MAX_IO))],
       [("blocks", U64)], frozenset({Status.IO}),
       "the acknowledged count equals the blocks written",
       "a partial write passed off as complete", check=_blk_write),
    _c(4, "blk_flush", [("dev", U32)], [], frozenset({Status.IO}),
       "none: freshness comes from the counter, not from trusting the flush",
       "a lost write: caught at the next mount by the counter"),
    _c(5, "counter_read", [("dev", U32)], [("value", U64)], frozenset({Status.IO}),
       "equals the value last read or set in this session; below 2^64 - 1",
       "rolling the counter back (with an old image)", check=_counter_read, effect=_record_counter),
    _c(6, "counter_advance", [("dev", U32), ("expected", U64), ("new", U64)], [],
       frozenset({Status.IO, Status.CONFLICT}),
       "CONFLICT only if the expected value is not the one known",
       "refusing a commit with a made-up conflict", check=_counter_advance, effect=_record_advance),
    _c(7, "net_listen", [("port", U32)], [("handle", U64), ("port", U32)],
       frozenset({Status.ADDRINUSE, Status.ACCES, Status.IO}),
       "a new handle; the port asked for (any port 1..65535 for 0)",
       "handle confusion; a listener on another port", check=_net_listen, effect=_opener("listener")),
    _c(8, "net_accept", [("listener", U64)], [("handle", U64)],
       frozenset({Status.AGAIN, Status.CONNABORTED, Status.IO}),
       "a new handle, never one already open",
       "splicing another connection's stream into this one", check=_new_stream, effect=_opener("stream")),
    _c(9, "net_connect", [("address", Bytes(MAX_ADDRESS)), ("timeout_ms", U32)], [("handle", U64)],
       frozenset({Status.CONNREFUSED, Status.TIMEDOUT, Status.UNREACH, Status.INVAL, Status.IO}),
       "a new handle, never one already open",
       "splicing another connection's stream into this one", check=_new_stream, effect=_opener("stream"),
       timeout_arg=1),
    _c(10, "net_read", [("handle", U64), ("max", U32)], [("data", Bytes(MAX_NET))],
       _NET | {Status.AGAIN},
       "at most max bytes; the bytes are TLS records, authenticated inside the enclave",
       "overflowing the reader's buffer; injecting or replaying data", check=_at_most(1)),
    _c(11, "net_write", [("handle", U64), ("data", Bytes(MAX_NET))], [("written", U32)],
       _NET | {Status.AGAIN},
       "0 < written <= len(data) (0 only for empty data)",
       "claiming more was sent than was given", check=_net_write),
    _c(12, "net_close", [("handle", U64)], [], frozenset({Status.BADF}),
       "none: the handle is forgotten whatever the answer", "-", effect=_close),
    _c(13, "net_poll", [("readable", u64_list(MAX_POLL)), ("writable", u64_list(MAX_POLL)),
                        ("timeout_ms", U32)],
       [("readable", u64_list(MAX_POLL)), ("writable", u64_list(MAX_POLL))], _E,
       "only handles that were asked about, each once",
       "waking the enclave on a handle it does not wait for", check=_net_poll, timeout_arg=2),
    _c(14, "clock_now", [], [("ns", I64)], _E,
       "not negative; the enclave sees max(answer, every earlier answer)",
       "time running backwards", check=_clock_now, effect=_clock_floor),
    _c(15, "console_write", [("stream", U32), ("data", Bytes(MAX_CONSOLE))], [],
       frozenset({Status.IO, Status.PIPE}),
       "none: the console is plaintext by the manifest's choice", "-"),
    _c(16, "console_read", [("max", U32), ("timeout_ms", U32)], [("data", Bytes(MAX_CONSOLE))],
       frozenset({Status.AGAIN, Status.IO}),
       "at most max bytes", "overflowing the reader's buffer", check=_at_most(0), timeout_arg=1),
    _c(17, "quote_target", [], [("target_info", Bytes(TargetInfo.SIZE))], frozenset({Status.IO}),
       "a TARGETINFO that parses (a wrong one only yields a quote that fails the next rule)",
       "a malformed target", check=_quote_target),
    _c(18, "quote", [("report", Bytes(Report.SIZE))], [("quote", Bytes(MAX_QUOTE_SIZE))],
       frozenset({Status.IO, Status.INVAL}),
       "an SGX quote that parses, carries exactly the enclave's REPORT body, and whose QE report and "
       "ISV signatures verify under its own PCK certificate and attestation key",
       "a forged, replayed or another enclave's quote", check=_quote),
    _c(19, "exit", [("code", U32)], [], _E, "none: not answered; the enclave process exits", "-",
       answered=False),
)  # fmt: skip

BY_ID: dict[int, Call] = {c.id: c for c in CALLS}
BY_NAME: dict[str, Call] = {c.name: c for c in CALLS}
assert len(CALLS) <= 22 and len(BY_ID) == len(BY_NAME) == len(CALLS)
MAX_FRAME_PAYLOAD = max(max(c.max_payload, c.max_request) for c in CALLS)


def check_answer(session: Session, call: Call, args: Values, status: Status, results: Values) -> Values:
    """Judge an answer whose frame parsed: raise :class:`HostViolation` if it breaks the call's rule,
    else record it in ``session`` and return the results the enclave may use."""
    if call.check is not None:
        try:
            broken = call.check(session, args, status, results)
        except Exception as e:  # a rule tripping over a hostile value is that value's fault
            broken = f"the answer could not be checked ({type(e).__name__})"
        if broken is not None:
            raise HostViolation(call.name, broken)
    if call.effect is not None:
        results = call.effect(session, args, status, results)
    return results


def markdown_table() -> str:
    """The table of ``docs/host-interface.md``, rendered from the declaration."""
    rows = ["| id | call | errors | the shield checks | the attack it stops |", "|---|---|---|---|---|"]
    for c in CALLS:
        errors = ", ".join(e.name for e in sorted(c.errors)) or "-"
        rows.append(f"| {c.id} | `{c.signature}` | {errors} | {c.rule} | {c.attack} |")
    return "\n".join(rows) + "\n"

"""A malicious host, for tests: a backend wrapper that, by a seeded plan, lies in its answers.

:class:`Adversary` serves every call with the honest backend it wraps, then — at the calls and
occurrences its :class:`Plan` names — changes what goes back on the wire. The faults are derived from
the declaration (:data:`haven.shield.hostif.CALLS`): what a call's answer is made of decides how it is
corrupted, cut short, stretched, replayed or pushed out of range. Besides those that apply to every
call, some are aimed at one: time moved backwards (``clock_now``), blocks swapped or an older image
served (``blk_read``), a stale counter (``counter_read``).

Every byte the enclave hands the host is kept in :attr:`Adversary.seen`, so a test can check that
no plaintext ever left the enclave.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from haven.host.dispatcher import Action, HostBackend
from haven.shield.hostif import BY_NAME, CALLS
from haven.shield.hostwire import (
    HEADER,
    I64,
    Bytes,
    Call,
    FrameHeader,
    Int,
    Packed,
    Part,
    Status,
    encode_response,
)


class Fault(enum.Enum):
    CORRUPT = "corrupt"  # flip a bit of the answer
    TRUNCATE = "truncate"  # cut the answer short (a short read, for streams)
    EXTEND = "extend"  # bytes after the answer's last value
    REPLAY = "replay"  # an earlier answer to the same call, as the answer to this one
    REORDER = "reorder"  # the previous answer first (an answer to a question not asked), then this
    OUT_OF_RANGE = "out-of-range"  # more than asked, all-ones/negative numbers, handles never issued
    DROP = "drop"  # never answer
    DELAY = "delay"  # answer late, within the enclave's patience
    TIME_BACKWARDS = "time-backwards"  # clock_now: an hour before the last answer
    SWAP_BLOCKS = "swap-blocks"  # blk_read: two blocks exchanged, or another block's contents
    OLD_IMAGE = "old-image"  # blk_read: from now on, the image as it was at its first flush
    STALE_COUNTER = "stale-counter"  # counter_read: one less than the counter holds


GENERIC = (Fault.CORRUPT, Fault.TRUNCATE, Fault.EXTEND, Fault.REPLAY, Fault.REORDER,
           Fault.OUT_OF_RANGE, Fault.DROP, Fault.DELAY)  # fmt: skip
AIMED = {
    Fault.TIME_BACKWARDS: ("clock_now",),
    Fault.SWAP_BLOCKS: ("blk_read",),
    Fault.OLD_IMAGE: ("blk_read",),
    Fault.STALE_COUNTER: ("counter_read",),
}
# Answers that are a stream of bytes: a shorter answer is an ordinary short read.
STREAMS = {"net_read": 0, "console_read": None}  # call -> index of its handle argument (None: stdin)
HANDLE_RESULTS = {"net_listen", "net_accept", "net_connect"}


def applies(fault: Fault, call: Call) -> bool:
    """Whether ``fault`` means anything for ``call`` (an unanswered call has no answer to spoil)."""
    if not call.answered:
        return False
    return fault in GENERIC or call.name in AIMED.get(fault, ())


def matrix() -> list[tuple[Call, Fault]]:
    """Every call with every fault that applies to it."""
    return [(c, f) for c in CALLS for f in Fault if applies(f, c)]


@dataclass(frozen=True)
class Injection:
    call: str
    fault: Fault
    occurrence: int  # which request of that call (0 = the first)


@dataclass(frozen=True)
class Plan:
    seed: int
    injections: tuple[Injection, ...] = ()
    delay: float = 0.05  # seconds, for DELAY

    @classmethod
    def single(cls, call: str, fault: Fault, counts: Mapping[str, int], seed: int) -> Plan:
        """One fault at an occurrence of ``call`` chosen by ``seed`` among the ``counts[call]`` an
        honest run makes (a stale counter is served at the last read, when there is a past to serve;
        a replay strikes a call made before, when there is one)."""
        n = max(1, counts.get(call, 1))
        rng = random.Random(seed)  # noqa: S311 - seeded on purpose: a plan must replay exactly
        if fault is Fault.STALE_COUNTER:
            at = n - 1
        elif fault is Fault.REPLAY and n > 1:
            at = rng.randrange(1, n)  # a call made before has an earlier answer to replay
        else:
            at = rng.randrange(n)
        return cls(seed, (Injection(call, fault, at),))

    @classmethod
    def scattered(cls, seed: int, counts: Mapping[str, int], faults: int = 3) -> Plan:
        """Several faults at seeded calls and occurrences."""
        rng = random.Random(seed)  # noqa: S311 - seeded on purpose: a plan must replay exactly
        cells = [(c, f) for c, f in matrix() if counts.get(c.name)]
        picks = [rng.choice(cells) for _ in range(faults)]
        return cls(seed, tuple(Injection(c.name, f, rng.randrange(counts[c.name])) for c, f in picks))

    def at(self, call: str, occurrence: int) -> Fault | None:
        for i in self.injections:
            if i.call == call and i.occurrence == occurrence:
                return i.fault
        return None


# The header's fields, in order, with their offsets and sizes (from its table).
_HEADER_FIELDS = {f.name: (f.metadata["offset"], f.metadata["size"]) for f in dataclasses.fields(FrameHeader)}
# Fields a corrupted header may have a bit flipped in (all but status and length, whose changes are
# out-of-range statuses and truncation, faults of their own).
_CORRUPTIBLE = ("magic", "version", "kind", "call", "seq", "reserved")


def _header_with(head: bytes, **changes: Any) -> bytes:
    fields = dict(zip(_HEADER_FIELDS, HEADER.unpack(head), strict=True))
    fields.update(changes)
    return HEADER.pack(*fields.values())


class Adversary(HostBackend):
    """A lying host: the honest ``inner`` backend's answers, spoilt as ``plan`` says."""

    def __init__(self, inner: HostBackend, plan: Plan | None = None) -> None:
        self.inner: Any = inner  # its call methods are found by name, as the dispatcher finds them
        self.plan = plan or Plan(0)
        self.rng = random.Random(self.plan.seed)  # noqa: S311 - seeded on purpose
        self.counts: Counter[str] = Counter()
        self.seen: list[bytes] = []  # every byte string the enclave handed over, console aside
        self.applied: list[tuple[str, int, Fault]] = []
        self._previous: dict[str, tuple[Any, ...]] = {}  # call -> its last honest results
        self._last_frame: list[Part] | None = None
        self._carry: dict[tuple[str, int | None], bytes] = {}  # stream -> bytes read but not yet handed over
        self._old: dict[int, bytes] | None = None  # dev -> the image at its first flush
        self._serve_old = False
        self._last_time = 0

    def __getattr__(self, name: str) -> Any:
        if name in BY_NAME:
            return getattr(self.inner, name)
        raise AttributeError(name)

    # ------------------------------------------------------------------------- the wire

    def respond(
        self, call: Call, seq: int, args: tuple[Any, ...], status: Status, results: tuple[Any, ...],
        frame: list[Part],
    ) -> Sequence[Action]:  # fmt: skip
        n = self.counts[call.name]
        self.counts[call.name] += 1
        if call.name != "console_write":
            self.seen.extend(bytes(a) for a in args if isinstance(a, (bytes, bytearray, memoryview)))
        status, results = self._honest_extras(call, args, status, results)
        fault = self.plan.at(call.name, n)
        if fault is not None and applies(fault, call):
            self.applied.append((call.name, n, fault))
            actions = self._spoil(fault, call, seq, args, status, results)
        else:
            actions = [encode_response(call, seq, status, results)]
        if status == Status.OK:
            self._previous[call.name] = results
        self._last_frame = encode_response(call, seq, status, results)
        return actions

    def _honest_extras(
        self, call: Call, args: tuple[Any, ...], status: Status, results: tuple[Any, ...]
    ) -> tuple[Status, tuple[Any, ...]]:
        """State the adversary keeps across calls: bytes held back by a short read are handed over
        first (and make their stream readable); the image is snapshotted at its first flush, and
        served instead of the current one once an OLD_IMAGE fault has struck."""
        name = call.name
        if name in STREAMS:
            key = (name, args[0] if STREAMS[name] == 0 else None)
            held = self._carry.pop(key, b"")
            if held:
                data = held + (results[0] if status == Status.OK else b"")
                limit = args[1] if name == "net_read" else args[0]
                if len(data) > limit:
                    self._carry[key] = data[limit:]
                return Status.OK, (data[:limit],)
        elif name == "net_poll" and status == Status.OK:
            waiting = {h for (c, h) in self._carry if c == "net_read" and h in args[0]}
            return status, (sorted(set(results[0]) | waiting), results[1])
        elif name == "blk_flush" and self._old is None and status == Status.OK:
            blocks = self.inner.blk_size(args[0])[0]
            self._old = {args[0]: self.inner.blk_read(args[0], [(0, blocks)])}
        elif name == "blk_read" and self._serve_old and self._old is not None and status == Status.OK:
            image = self._old[args[0]]
            size = len(image) // self.inner.blk_size(args[0])[0]
            return status, (b"".join(image[lba * size : (lba + n) * size] for lba, n in args[1]),)
        elif name == "clock_now" and status == Status.OK:
            self._last_time = results[0]
        return status, results

    def _spoil(
        self, fault: Fault, call: Call, seq: int, args: tuple[Any, ...], status: Status,
        results: tuple[Any, ...],
    ) -> list[Action]:  # fmt: skip
        honest = encode_response(call, seq, status, results)
        if fault is Fault.DROP:
            return []
        if fault is Fault.DELAY:
            return [self.plan.delay, honest]
        if fault is Fault.REORDER:
            return [[*(self._last_frame or honest), *honest]]  # one send: both arrive together
        if fault is Fault.EXTEND:
            return [self._rebuild(honest, extra=self.rng.randbytes(8))]
        if status != Status.OK:
            return [honest]  # an error answer carries nothing to spoil but its status
        spoilt = self._spoil_values(fault, call, args, results)
        if spoilt is None:  # nothing in the values to spoil: spoil the frame instead
            return self._spoil_frame(fault, call, seq, honest)
        return [encode_response(call, seq, status, spoilt, strict=False)]

    def _spoil_values(
        self, fault: Fault, call: Call, args: tuple[Any, ...], results: tuple[Any, ...]
    ) -> tuple[Any, ...] | None:
        values = list(results)
        kinds = [t for _, t in call.results]
        data_at = next((i for i, t in enumerate(kinds) if isinstance(t, Bytes)), None)
        list_at = next((i for i, t in enumerate(kinds) if isinstance(t, Packed) and values[i]), None)
        int_at = max((i for i, t in enumerate(kinds) if isinstance(t, Int)), default=None)
        if fault is Fault.TIME_BACKWARDS:
            return (max(0, self._last_time - 3600 * 10**9),)
        if fault is Fault.STALE_COUNTER:
            return (max(0, values[0] - 1),)
        if fault is Fault.OLD_IMAGE:
            self._serve_old = self._old is not None  # from here on (once there is an old image)
            return self._honest_extras(call, args, Status.OK, results)[1]
        if fault is Fault.SWAP_BLOCKS:
            return (self._swap_blocks(args, values[0]),)
        if fault is Fault.REPLAY:
            earlier = self._previous.get(call.name)
            if earlier is not None and call.name in STREAMS:
                # Replayed bytes are injected into the stream: what was really read is not lost.
                key = (call.name, args[0] if STREAMS[call.name] == 0 else None)
                data = earlier[0] + values[0]
                limit = args[1] if call.name == "net_read" else args[0]
                self._carry[key] = data[limit:] + self._carry.get(key, b"")
                return (data[:limit],)
            return earlier
        if fault is Fault.CORRUPT:
            if data_at is not None and values[data_at]:
                data = bytearray(values[data_at])
                data[self.rng.randrange(min(len(data), 1024))] ^= 1 << self.rng.randrange(8)
                values[data_at] = bytes(data)
            elif list_at is not None:
                values[list_at] = [values[list_at][0] ^ (1 << 40), *values[list_at][1:]]
            elif int_at is not None:
                t = kinds[int_at]
                assert isinstance(t, Int)
                values[int_at] = values[int_at] ^ (1 << (8 * t.max_size - 1))
                if t is I64:
                    values[int_at] -= 1 << 64
            else:
                return None
            return tuple(values)
        if fault is Fault.TRUNCATE:
            if data_at is not None and len(values[data_at]) > 1:
                data = values[data_at]
                cut = self.rng.randrange(1, len(data))
                if call.name in STREAMS:  # a short read: the rest comes with the next one
                    key = (call.name, args[0] if STREAMS[call.name] == 0 else None)
                    self._carry[key] = data[cut:] + self._carry.get(key, b"")
                values[data_at] = data[:cut]
                return tuple(values)
            if list_at is not None:
                values[list_at] = values[list_at][:-1]
                return tuple(values)
            return None
        if fault is Fault.OUT_OF_RANGE:
            return self._out_of_range(call, args, values, kinds, data_at, list_at, int_at)
        return None

    def _out_of_range(
        self, call: Call, args: tuple[Any, ...], values: list[Any], kinds: list[Any],
        data_at: int | None, list_at: int | None, int_at: int | None,
    ) -> tuple[Any, ...] | None:  # fmt: skip
        if call.name in HANDLE_RESULTS:
            issued = sorted(h for h in self._handles_issued() if h != values[0])
            values[0] = issued[-1] if issued else 0  # a handle already open, or one never valid
        elif data_at is not None:
            kind = kinds[data_at]
            assert isinstance(kind, Bytes)
            if call.name == "blk_read":  # a block more than the runs asked for
                more = len(values[data_at]) + self.inner.blk_size(args[0])[1]
            elif call.name in STREAMS:  # a byte more than the reader can take
                more = (args[1] if call.name == "net_read" else args[0]) + 1
            else:  # a byte more than any answer may have
                more = kind.limit + 1
            values[data_at] = (values[data_at] + self.rng.randbytes(more))[:more]
        elif call.name == "net_poll":
            values[0] = [*values[0], max([*args[0], *args[1], 0]) + 1000]
        elif int_at is not None:
            t = kinds[int_at]
            assert isinstance(t, Int)
            values[int_at] = -1 if t is I64 else t.hi
        else:
            return None
        return tuple(values)

    def _handles_issued(self) -> list[int]:
        out = []
        for name in HANDLE_RESULTS:
            prev = self._previous.get(name)
            if prev:
                out.append(prev[0])
        return out

    def _swap_blocks(self, args: tuple[Any, ...], data: bytes) -> bytes:
        dev, run_list = args
        blocks, size = self.inner.blk_size(dev)
        if len(data) >= 2 * size:
            return data[size : 2 * size] + data[:size] + data[2 * size :]
        lba = run_list[0][0]
        other = lba + 1 if lba + 1 < blocks else lba - 1
        return bytes(self.inner.blk_read(dev, [(other, 1)])) + data[size:]

    # ------------------------------------------------------------------------- frames

    def _spoil_frame(self, fault: Fault, call: Call, seq: int, honest: list[Part]) -> list[Action]:
        frame = b"".join(bytes(p) for p in honest)
        head, payload = frame[: FrameHeader.SIZE], frame[FrameHeader.SIZE :]
        if fault is Fault.CORRUPT:
            offset, size = _HEADER_FIELDS[self.rng.choice(_CORRUPTIBLE)]
            at = offset + self.rng.randrange(size)
            spoilt = bytearray(frame)
            spoilt[at] ^= 1 << self.rng.randrange(8)
            return [[bytes(spoilt)]]
        if fault is Fault.TRUNCATE:
            if payload:
                return [self._rebuild(honest, cut=1)]
            return [[head[: self.rng.randrange(1, len(head))]], None]  # half a header, then hang up
        if fault is Fault.REPLAY:
            return [[*(self._last_frame or honest), *honest]]
        if fault is Fault.OUT_OF_RANGE:
            return [[_header_with(head, status=0xFFFF) + payload]]  # a status no call declares
        return [honest]

    @staticmethod
    def _rebuild(honest: list[Part], *, extra: bytes = b"", cut: int = 0) -> list[Part]:
        """The frame with its payload stretched or shortened, and the header's length to match."""
        frame = b"".join(bytes(p) for p in honest)
        head, payload = frame[: FrameHeader.SIZE], frame[FrameHeader.SIZE :]
        payload = (payload[: len(payload) - cut] if cut else payload) + extra
        return [_header_with(head, length=len(payload)), payload]

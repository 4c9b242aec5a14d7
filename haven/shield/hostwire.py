"""The host interface's wire: its type vocabulary, the frame header, and the codec (sans-I/O).

Every message between the shield and the host is a :class:`FrameHeader` followed by ``length``
payload bytes: the call's arguments (a request) or its results (an answer), each value encoded by its
type — ``u32``, ``u64``, ``i64`` little-endian; ``bytes(max)`` as a u32 length and the bytes;
``list(u64, max)`` and ``runs(max)`` as a u32 count and fixed-size records — with nothing left over.
A request carries a sequence number that its answer must echo: the shield has one question
outstanding at a time, so an answer with any other number answers a question not asked.

The calls themselves, and the rules their answers must satisfy, are declared in
:mod:`haven.shield.hostif`; this module only knows how to write and read them. Decoding is strict:
an unknown call, a wrong sequence number, a length that disagrees with the bytes, a value over its
limit or a byte left over is refused — by the host with :class:`FrameError`, by the shield as a
:class:`HostViolation`.
"""

from __future__ import annotations

import enum
import functools
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from haven.errors import HavenError
from haven.structs import Struct, field_at

MAGIC = b"HVNH"
VERSION = 1
REQUEST = 1
RESPONSE = 2

# A frame goes out as a header and payload parts, gathered by one send (no copy of a large payload).
Part = bytes | bytearray | memoryview

EXIT_VIOLATION = 70  # sysexits.h EX_SOFTWARE: the process stopped itself on purpose


class Status(enum.IntEnum):
    """What the host may answer instead of a result (each call lists the ones it may use)."""

    OK = 0
    IO = 1  # the host's storage or device failed
    BADF = 2  # no such device or handle
    AGAIN = 3  # nothing to read, no room to write, no connection to accept: poll and retry
    CONFLICT = 4  # a counter's compare-and-set found another value
    ADDRINUSE = 5
    ACCES = 6
    CONNREFUSED = 7
    CONNRESET = 8
    CONNABORTED = 9
    TIMEDOUT = 10
    UNREACH = 11
    PIPE = 12  # the peer closed its end
    INVAL = 13  # the host refused the arguments (a bad address; a report the quoting enclave refused)


class FrameError(HavenError):
    """A frame or payload does not parse (a malformed request on the host's side)."""


class HostViolation(HavenError):
    """The host broke the interface: ``rule`` says how its answer to ``call`` is wrong."""

    exit_code = EXIT_VIOLATION

    def __init__(self, call: str, rule: str) -> None:
        super().__init__(f"{call}: {rule}")
        self.call = call
        self.rule = rule


class HostCallError(HavenError):
    """The host answered a call with one of the error statuses that call allows."""

    def __init__(self, call: str, status: Status) -> None:
        super().__init__(f"host call {call} failed: {status.name}")
        self.call = call
        self.status = status


# ----------------------------------------------------------------------------------------- framing


@dataclass
class FrameHeader(Struct):
    """The 24-byte header of every message between the shield and the host."""

    SIZE: ClassVar[int] = 24
    magic: bytes = field_at(0, "4s")  # MAGIC
    version: int = field_at(4, "<B")  # VERSION
    kind: int = field_at(5, "<B")  # REQUEST or RESPONSE
    call: int = field_at(6, "<H")  # Call.id
    seq: int = field_at(8, "<Q")  # the request's number; an answer echoes it
    status: int = field_at(16, "<H")  # Status (responses; 0 in requests)
    reserved: bytes = field_at(18, "2s", reserved=True)
    length: int = field_at(20, "<I")  # payload bytes that follow


def _codec(table: type[Struct]) -> struct.Struct:
    """The table's compiled ``struct.Struct``: one C call per header on the per-crossing path."""
    table._layout()
    return table._CODEC


HEADER = _codec(FrameHeader)


# ------------------------------------------------------------------------------------------ types


class WireType:
    """A type of the vocabulary: how a value is written and read, and its largest encoding."""

    name: str
    max_size: int

    def put(self, value: Any, out: list[Part], strict: bool = True) -> None:
        """Append the encoding of ``value``; ``strict=False`` skips the limits (for hostile answers
        built in tests, never for honest traffic)."""
        raise NotImplementedError

    def take(self, data: memoryview, at: int, copy: bool = True) -> tuple[Any, int]:
        """Read a value at ``at``; ``copy=False`` lets a byte string stay a view of ``data`` (for a
        buffer that is not reused while the value lives)."""
        raise NotImplementedError


class Int(WireType):
    def __init__(self, name: str, fmt: str) -> None:
        self.name = name
        self._codec = struct.Struct(fmt)
        self.max_size = self._codec.size
        signed = fmt[-1].islower()
        bits = 8 * self.max_size
        self.lo, self.hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def put(self, value: Any, out: list[Part], strict: bool = True) -> None:
        # An integer's range is its encoding: there is no looser form to allow.
        if type(value) is not int or not self.lo <= value <= self.hi:
            raise ValueError(f"{value!r} is not a {self.name}")
        out.append(self._codec.pack(value))

    def take(self, data: memoryview, at: int, copy: bool = True) -> tuple[Any, int]:
        end = at + self.max_size
        if end > len(data):
            raise FrameError(f"a {self.name} runs past the end of the payload")
        return self._codec.unpack_from(data, at)[0], end


_LEN = struct.Struct("<I")  # the u32 length or count in front of every variable-length value


def _count(data: memoryview, at: int, limit: int, what: str) -> tuple[int, int]:
    if at + 4 > len(data):
        raise FrameError(f"the length of a {what} runs past the end of the payload")
    n = _LEN.unpack_from(data, at)[0]
    if n > limit:
        raise FrameError(f"a {what} of {n}, more than its limit of {limit}")
    return n, at + 4


def _size(n: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return str(n)


class Bytes(WireType):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.name = f"bytes(≤{_size(limit)})"
        self.max_size = 4 + limit

    def put(self, value: Any, out: list[Part], strict: bool = True) -> None:
        # A list of buffers is one byte string sent as it lies (gathered, never joined into a copy).
        pieces = value if isinstance(value, list) else [value]
        if not all(isinstance(p, (bytes, bytearray, memoryview)) for p in pieces):
            raise ValueError(f"not a {self.name}")
        n = sum(len(p) for p in pieces)
        if strict and n > self.limit:
            raise ValueError(f"not a {self.name}: {n} bytes")
        out.append(_LEN.pack(n))
        out.extend(pieces)

    def take(self, data: memoryview, at: int, copy: bool = True) -> tuple[Any, int]:
        n, at = _count(data, at, self.limit, "byte string")
        if at + n > len(data):
            raise FrameError(f"a byte string of {n} runs past the end of the payload")
        return (bytes(data[at : at + n]) if copy else data[at : at + n]), at + n


class Packed(WireType):
    """A list of fixed-size records: ``list(u64, max)`` and ``runs(max)``."""

    def __init__(self, name: str, fmt: str, limit: int) -> None:
        self.name = f"{name}(≤{limit})" if name == "runs" else f"list({name}, ≤{limit})"
        self.limit = limit
        self._item = struct.Struct(fmt)
        self._width = len(fmt) - 1
        self.max_size = 4 + limit * self._item.size

    def put(self, value: Any, out: list[Part], strict: bool = True) -> None:
        items = list(value)
        if strict and len(items) > self.limit:
            raise ValueError(f"more than {self.limit} items in a {self.name}")
        flat = items if self._width == 1 else [x for item in items for x in item]
        fmt = f"<I{len(items) * self._item.format[1:]}"
        try:
            out.append(struct.pack(fmt, len(items), *flat))
        except struct.error as e:
            raise ValueError(f"not a {self.name}: {e}") from None

    def take(self, data: memoryview, at: int, copy: bool = True) -> tuple[Any, int]:
        n, at = _count(data, at, self.limit, "list")
        end = at + n * self._item.size
        if end > len(data):
            raise FrameError(f"a list of {n} runs past the end of the payload")
        items = [t if self._width > 1 else t[0] for t in self._item.iter_unpack(data[at:end])]
        return items, end


U32 = Int("u32", "<I")
U64 = Int("u64", "<Q")
I64 = Int("i64", "<q")


def u64_list(limit: int) -> Packed:
    return Packed("u64", "<Q", limit)


def runs(limit: int) -> Packed:
    """Runs of blocks: (first block u64, count u32) pairs."""
    return Packed("runs", "<QI", limit)


# ---------------------------------------------------------------------------------------- session


@dataclass
class Session:
    """What the shield has learnt from the host's earlier answers, against which later ones are judged."""

    devices: dict[int, tuple[int, int]] = field(default_factory=dict)  # dev -> (blocks, block size)
    counters: dict[int, int] = field(default_factory=dict)  # dev -> the counter's known value
    handles: dict[int, str] = field(default_factory=dict)  # open handle -> "listener" | "stream"
    clock_floor: int = 0  # the latest wall time handed out (ns)


Values = tuple[Any, ...]
Checker = Callable[[Session, Values, Status, Values], "str | None"]
Effect = Callable[[Session, Values, Status, Values], Values]


@dataclass(frozen=True)
class Call:
    """One call of the interface."""

    id: int
    name: str
    args: tuple[tuple[str, WireType], ...]
    results: tuple[tuple[str, WireType], ...]
    errors: frozenset[Status]
    rule: str  # the rule, for people (docs/host-interface.md)
    attack: str  # what a host breaking it would be attempting
    check: Checker | None = None  # returns what is wrong with an answer, or None
    effect: Effect | None = None  # records an accepted answer in the session; may adjust the results
    timeout_arg: int | None = None  # index of a "timeout_ms" argument that lengthens the wait
    answered: bool = True  # False: the host does not answer (exit)

    @functools.cached_property
    def max_payload(self) -> int:
        """The largest answer this call can have."""
        return sum(t.max_size for _, t in self.results)

    @functools.cached_property
    def max_request(self) -> int:
        return sum(t.max_size for _, t in self.args)

    @functools.cached_property
    def error_values(self) -> frozenset[int]:
        return frozenset(int(e) for e in self.errors)

    @property
    def signature(self) -> str:
        args = ", ".join(f"{n}: {t.name}" for n, t in self.args)
        res = ", ".join(f"{n}: {t.name}" for n, t in self.results)
        return f"{self.name}({args}) -> ({res})"


# ------------------------------------------------------------------------------------------ codec


class Header(NamedTuple):
    kind: int
    call: int
    seq: int
    status: int
    length: int


def parse_header(data: bytes | bytearray | memoryview) -> Header:
    """The header at the start of ``data`` (at least ``FrameHeader.SIZE`` bytes)."""
    magic, version, kind, call, seq, status, reserved, length = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise FrameError("not a host-interface frame (bad magic or version)")
    if reserved != b"\0\0":
        raise FrameError("the header's reserved bytes are not zero")
    return Header(kind, call, seq, status, length)


def encode_values(
    fields: Sequence[tuple[str, WireType]], values: Sequence[Any], *, strict: bool = True
) -> list[Part]:
    if len(values) != len(fields):
        raise TypeError(f"{len(values)} values for {len(fields)} fields")
    parts: list[Part] = []
    for (_, t), v in zip(fields, values, strict=True):
        t.put(v, parts, strict)
    return parts


def decode_values(
    fields: Sequence[tuple[str, WireType]], payload: memoryview, *, copy: bool = True
) -> tuple[Any, ...]:
    at = 0
    out = []
    for _, t in fields:
        value, at = t.take(payload, at, copy)
        out.append(value)
    if at != len(payload):
        raise FrameError(f"{len(payload) - at} bytes left over after the last value")
    return tuple(out)


def _frame(kind: int, call: int, seq: int, status: int, parts: list[Part]) -> list[Part]:
    length = sum(len(p) for p in parts)
    return [HEADER.pack(MAGIC, VERSION, kind, call, seq, status, b"\0\0", length), *parts]


def encode_request(call: Call, seq: int, args: Sequence[Any]) -> list[Part]:
    """The frame of a request, as a header followed by payload parts (for a gathering send)."""
    return _frame(REQUEST, call.id, seq, 0, encode_values(call.args, args))


def decode_request(
    header: Header, payload: memoryview, calls: Mapping[int, Call], *, copy: bool = True
) -> tuple[Call, tuple[Any, ...]]:
    """The host's view of a request: which call, with which arguments (``copy=False``: byte strings
    stay views of ``payload``)."""
    if header.kind != REQUEST or header.status:
        raise FrameError("not a request")
    call = calls.get(header.call)
    if call is None:
        raise FrameError(f"unknown call {header.call}")
    if header.length != len(payload):
        raise FrameError(f"header says {header.length} payload bytes, {len(payload)} given")
    return call, decode_values(call.args, payload, copy=copy)


def encode_response(
    call: Call, seq: int, status: int, results: Sequence[Any] = (), *, strict: bool = True
) -> list[Part]:
    """The frame of an answer: the results, or an error status with an empty payload."""
    parts = encode_values(call.results, results, strict=strict) if status == Status.OK else []
    return _frame(RESPONSE, call.id, seq, int(status), parts)


def check_response_header(call: Call, seq: int, header: Header) -> Status:
    """What the shield checks before it reads an answer's payload: that it answers this question,
    with a status this call may give, in no more bytes than this call's largest answer."""
    if header.kind != RESPONSE:
        raise HostViolation(call.name, "the frame is not an answer")
    if header.seq != seq:
        raise HostViolation(
            call.name, f"an answer to a question not asked (sequence {header.seq}, expected {seq})"
        )
    if header.call != call.id:
        raise HostViolation(call.name, f"an answer to another call (id {header.call})")
    if header.status and header.status not in call.error_values:
        raise HostViolation(call.name, f"status {header.status} is not an answer this call may give")
    limit = call.max_payload if header.status == Status.OK else 0
    if header.length > limit:
        raise HostViolation(call.name, f"an answer of {header.length} bytes, more than {limit}")
    return Status(header.status) if header.status else Status.OK


def decode_response(
    call: Call, seq: int, header: Header, payload: memoryview
) -> tuple[Status, tuple[Any, ...]]:
    """The shield's view of an answer: its status and results, or a :class:`HostViolation`."""
    status = check_response_header(call, seq, header)
    if header.length != len(payload):
        raise HostViolation(call.name, f"header says {header.length} payload bytes, {len(payload)} given")
    return status, decode_results(call, status, payload)


def decode_results(call: Call, status: Status, payload: memoryview) -> tuple[Any, ...]:
    """An answer's results, once its header has passed :func:`check_response_header`."""
    if status != Status.OK:
        return ()
    try:
        return decode_values(call.results, payload)
    except FrameError as e:
        raise HostViolation(call.name, f"the answer does not parse: {e}") from None

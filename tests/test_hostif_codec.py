"""The host interface's declaration and wire: the table, the frame header, strict encoding and decoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from haven.shield.hostif import BY_ID, BY_NAME, CALLS, markdown_table
from haven.shield.hostwire import (
    HEADER,
    MAGIC,
    REQUEST,
    RESPONSE,
    VERSION,
    Bytes,
    Call,
    FrameError,
    FrameHeader,
    HostViolation,
    Int,
    Packed,
    Status,
    check_response_header,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    parse_header,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "host-interface.md"


def sample(t: Any, seed: int = 1) -> Any:
    """A value of wire type ``t`` (small, but not trivially empty)."""
    if isinstance(t, Int):
        return min(t.hi, 1000 + seed) if t.lo == 0 else -(1000 + seed)
    if isinstance(t, Bytes):
        return bytes(range(seed % 7, seed % 7 + min(t.limit, 40)))
    assert isinstance(t, Packed)
    return [(seed, 2), (seed + 10, 1)] if t.name.startswith("runs") else [seed, seed + 1]


def frame_bytes(parts: list[Any]) -> bytes:
    return b"".join(bytes(p) for p in parts)


def split(frame: bytes) -> tuple[Any, memoryview]:
    return parse_header(frame), memoryview(frame)[FrameHeader.SIZE :]


# ------------------------------------------------------------------------------------------ table


def test_the_table_is_small_and_consistent() -> None:
    assert len(CALLS) <= 22
    assert sorted(BY_ID) == list(range(1, len(CALLS) + 1))
    assert set(BY_NAME) == {c.name for c in CALLS}
    first_cut = {"blk_size", "blk_read", "blk_write", "blk_flush", "net_listen", "net_accept", "net_connect",
                 "net_read", "net_write", "net_close", "net_poll", "clock_now", "console_write", "quote",
                 "exit"}  # fmt: skip
    assert first_cut <= set(BY_NAME)
    for c in CALLS:
        assert c.rule and c.attack
        assert Status.OK not in c.errors
        if c.timeout_arg is not None:
            assert c.args[c.timeout_arg][0] == "timeout_ms"


def test_the_doc_carries_the_table_as_declared() -> None:
    # The document is checked against the declaration, so neither can drift from the other.
    assert markdown_table() in DOC.read_text()


def test_header_table() -> None:
    assert FrameHeader.SIZE == HEADER.size == 24
    names = ("magic", "version", "kind", "call", "seq", "status", "length")
    assert [FrameHeader.offset_of(n) for n in names] == [0, 4, 5, 6, 8, 16, 20]
    h = FrameHeader(magic=MAGIC, version=VERSION, kind=REQUEST, call=3, seq=9, length=5)
    assert h.to_bytes() == HEADER.pack(MAGIC, VERSION, REQUEST, 3, 9, 0, b"\0\0", 5)


# ----------------------------------------------------------------------------------------- codec


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.name)
def test_every_call_round_trips(call: Call) -> None:
    args = tuple(sample(t, i) for i, (_, t) in enumerate(call.args))
    got_call, got_args = decode_request(*split(frame_bytes(encode_request(call, 7, args))), BY_ID)
    assert got_call is call and got_args == args
    results = tuple(sample(t, i + 3) for i, (_, t) in enumerate(call.results))
    status, got = decode_response(call, 7, *split(frame_bytes(encode_response(call, 7, Status.OK, results))))
    assert status == Status.OK and got == results
    for error in call.errors:
        assert decode_response(call, 7, *split(frame_bytes(encode_response(call, 7, error)))) == (error, ())


def test_encoding_refuses_values_out_of_their_type() -> None:
    blk_read, net_write, clock = BY_NAME["blk_read"], BY_NAME["net_write"], BY_NAME["clock_now"]
    with pytest.raises(ValueError, match="u32"):
        encode_request(blk_read, 1, (-1, []))
    with pytest.raises(ValueError, match="bytes"):
        encode_request(net_write, 1, (1, b"x" * (256 * 1024 + 1)))
    with pytest.raises(ValueError, match="i64"):
        encode_response(clock, 1, Status.OK, (1 << 63,))
    with pytest.raises(TypeError):
        encode_request(blk_read, 1, (1,))


def _request(call: Call, args: tuple[Any, ...]) -> bytes:
    return frame_bytes(encode_request(call, 1, args))


def _with_header(frame: bytes, **changes: int) -> bytes:
    fields = dict(zip(("magic", "version", "kind", "call", "seq", "status", "reserved", "length"),
                      HEADER.unpack_from(frame), strict=True))  # fmt: skip
    fields.update(changes)
    return HEADER.pack(*fields.values()) + frame[FrameHeader.SIZE :]


def test_header_refusals() -> None:
    good = _request(BY_NAME["clock_now"], ())
    with pytest.raises(FrameError, match="magic"):
        parse_header(b"XXXX" + good[4:])
    with pytest.raises(FrameError, match="magic or version"):
        parse_header(_with_header(good, version=2))
    with pytest.raises(FrameError, match="reserved"):
        parse_header(good[:18] + b"\0\1" + good[20:])


def test_request_refusals() -> None:
    blk_read = BY_NAME["blk_read"]
    good = _request(blk_read, (0, [(0, 1)]))
    with pytest.raises(FrameError, match="unknown call 99"):
        decode_request(*split(_with_header(good, call=99)), BY_ID)
    with pytest.raises(FrameError, match="not a request"):
        decode_request(*split(_with_header(good, kind=RESPONSE)), BY_ID)
    with pytest.raises(FrameError, match="says"):
        decode_request(*split(_with_header(good, length=3)), BY_ID)
    with pytest.raises(FrameError, match="left over"):
        decode_request(*split(_with_header(good + b"\0", length=len(good) - 23)), BY_ID)
    with pytest.raises(FrameError, match="past the end"):
        decode_request(*split(_with_header(good[:-4], length=len(good) - 28)), BY_ID)
    head = HEADER.pack(MAGIC, VERSION, REQUEST, blk_read.id, 1, 0, b"\0\0", 8)
    too_many = head + bytes(4) + (5000).to_bytes(4, "little")  # dev 0, then a count of 5000 runs
    with pytest.raises(FrameError, match="more than its limit"):
        decode_request(*split(too_many), BY_ID)


def _answer(call: Call, seq: int, status: Status, results: tuple[Any, ...] = ()) -> bytes:
    return frame_bytes(encode_response(call, seq, status, results))


def test_answer_refusals_are_violations_named_for_the_call() -> None:
    read = BY_NAME["net_read"]
    good = _answer(read, 5, Status.OK, (b"abc",))
    cases = {
        "not asked": _with_header(good, seq=4),
        "another call": _with_header(good, call=BY_NAME["net_write"].id),
        "not an answer": _with_header(good, kind=REQUEST),
        "is not an answer this call may give": _with_header(good, status=int(Status.CONFLICT)),
        "more than": _with_header(good, length=read.max_payload + 1),
        "does not parse": _with_header(good[:-1], length=len(good) - 25),
    }
    for reason, frame in cases.items():
        with pytest.raises(HostViolation, match=reason) as e:
            decode_response(read, 5, parse_header(frame), memoryview(frame)[24:])
        assert e.value.call == "net_read"
    # An error status carries no payload.
    err = _with_header(_answer(read, 5, Status.AGAIN) + b"x", length=1)
    with pytest.raises(HostViolation, match="more than 0"):
        check_response_header(read, 5, parse_header(err))

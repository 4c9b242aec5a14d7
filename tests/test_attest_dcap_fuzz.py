"""Fuzzing (hypothesis, bounded): hostile quotes, collateral and DER give clean `AttestationError`s only.

Every parser and `verify_dcap` is fed arbitrary bytes and mutations of real inputs (byte changes,
insertions, deletions, truncations); anything other than an `AttestationError` — another exception,
or a verdict for a changed quote — fails the test. Bounded to a few hundred examples each for CI.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haven.attest.dcap import (
    Collateral,
    load_collateral,
    parse_collateral_json,
    parse_pck_extension,
    parse_quote,
    verify_dcap,
)
from haven.attest.dcap.collateral import split_signed_body
from haven.attest.dcap.documents import loads_strict, parse_enclave_identity, parse_tcb_info
from haven.attest.errors import AttestationError
from haven.tee.sim.pki import pck_extension_der
from tests.conftest import VECTORS
from tests.dcap_support import SETS, DcapSet

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason="attestation vectors not found")


def _load(s: DcapSet) -> tuple[bytes, Collateral]:
    return s.quote_bytes(VECTORS), load_collateral(VECTORS / s.collateral)


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few random edits: byte changes, insertions, deletions or a truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "set" and out:
            out[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            out[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and out:
            del out[i : i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del out[i:]
    return bytes(out)


def _only_attestation_errors(call: object) -> None:
    with contextlib.suppress(AttestationError):
        call()  # type: ignore[operator]


@FUZZ
@given(st.binary(max_size=6000))
def test_arbitrary_bytes_as_a_quote(data: bytes) -> None:
    _only_attestation_errors(lambda: parse_quote(data))


@pytest.mark.parametrize("s", [SETS[0], SETS[1], SETS[2]], ids=["sgx-v3", "tdx-v4", "tdx-v5"])
@FUZZ
@given(data=st.data())
def test_mutated_real_quotes_are_refused(s: DcapSet, data: st.DataObject) -> None:
    quote, collateral = _load(s)
    changed = data.draw(mutations(quote))
    try:
        verify_dcap(changed, collateral, now=s.now)
    except AttestationError:
        return
    # Only a change confined to the zero padding (or none at all) may still verify.
    parsed = parse_quote(changed)
    assert changed[: len(changed) - parsed.padding] == quote[: len(quote) - parse_quote(quote).padding]


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_der_as_a_pck_extension(data: bytes) -> None:
    _only_attestation_errors(lambda: parse_pck_extension(data))


_EXTENSION = pck_extension_der(
    ppid=bytes(16), components=tuple(range(16)), pcesvn=13, cpusvn=bytes(16), pce_id=bytes(2), fmspc=bytes(6)
)


@FUZZ
@given(data=st.data())
def test_mutated_pck_extensions(data: st.DataObject) -> None:
    _only_attestation_errors(lambda: parse_pck_extension(data.draw(mutations(_EXTENSION))))


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text_as_collateral(text: str) -> None:
    _only_attestation_errors(lambda: parse_collateral_json(text))
    _only_attestation_errors(lambda: split_signed_body(text.encode(), "tcbInfo", "TCB Info"))


_SGX_COLLATERAL = (VECTORS / SETS[0].collateral).read_text() if VECTORS.is_dir() else "{}"
_TDX_COLLATERAL = (VECTORS / SETS[1].collateral).read_text() if VECTORS.is_dir() else "{}"


@FUZZ
@given(data=st.data())
def test_mutated_collateral_json(data: st.DataObject) -> None:
    text = data.draw(mutations(_SGX_COLLATERAL.encode()))
    try:
        collateral = parse_collateral_json(text)
    except AttestationError:
        return
    s = SETS[0]
    _only_attestation_errors(lambda: verify_dcap(s.quote_bytes(VECTORS), collateral, now=s.now))


@pytest.mark.parametrize("source", ["sgx", "tdx"])
@FUZZ
@given(data=st.data())
def test_mutated_documents(source: str, data: st.DataObject) -> None:
    doc = json.loads(_SGX_COLLATERAL if source == "sgx" else _TDX_COLLATERAL)
    for name, parse in (("tcb_info", parse_tcb_info), ("qe_identity", parse_enclave_identity)):
        changed = data.draw(mutations(doc[name].encode()))
        text = changed.decode("utf-8", "replace")
        _only_attestation_errors(lambda t=text, p=parse, n=name: p(loads_strict(t, n)))


@FUZZ
@given(data=st.data())
def test_mutated_pcs_bodies(data: st.DataObject) -> None:
    body = (Path(VECTORS) / "tdx/go-tdx-guest/sample_tcbInfo_response").read_bytes()
    _only_attestation_errors(lambda: split_signed_body(data.draw(mutations(body)), "tcbInfo", "TCB Info"))

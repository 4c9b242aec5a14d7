"""Evidence arrives as raw bytes, hex (with or without ``0x``) or base64; find out which.

Detection is by alphabet, strictest first: text that is entirely hex digits (after an optional ``0x``
and surrounding whitespace) is hex; text in the base64 alphabet that decodes strictly is base64;
anything else is taken as raw binary. Binary evidence formats (DCAP quotes start with a small
little-endian version, SNP reports with one too, COSE_Sign1 with 0x84 or 0xD2) never consist only of
ASCII hex or base64 characters, so the order cannot misread a real binary document.
"""

from __future__ import annotations

import base64
import binascii
import re

from haven.attest.errors import AttestationError

# Larger than any evidence format (a TDX quote with its chain is ~8 KB, padded GCP quotes 8000 B).
MAX_EVIDENCE = 1 << 20

_HEX = re.compile(rb"(?:0[xX])?([0-9a-fA-F]+)")
_BASE64 = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")


def decode_evidence(data: bytes) -> bytes:
    """Raw evidence bytes from ``data`` in any of the accepted encodings."""
    if len(data) > MAX_EVIDENCE:
        raise AttestationError("malformed", f"evidence of {len(data)} bytes is larger than {MAX_EVIDENCE}")
    if not data:
        raise AttestationError("malformed", "the evidence is empty")
    text = b"".join(data.split())  # line breaks and spaces inside hex or base64 text
    m = _HEX.fullmatch(text)
    if m and len(m.group(1)) % 2 == 0:
        return bytes.fromhex(m.group(1).decode())
    if _BASE64.fullmatch(text):
        padded = text + b"=" * (-len(text) % 4)
        try:
            if b"-" in text or b"_" in text:
                return base64.urlsafe_b64decode(padded)
            return base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            pass
    return data

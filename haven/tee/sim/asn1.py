"""The few DER encodings the SGX PCK certificate extension needs (ITU-T X.690, section 8 and 10).

`cryptography` writes the certificate itself; only the value of Intel's SGX extension is built here:
SEQUENCE, OBJECT IDENTIFIER, OCTET STRING, INTEGER and ENUMERATED, in their DER (definite-length,
minimal) forms. Encoding only — parsing untrusted DER is left to `cryptography` and the verifier.
"""

from __future__ import annotations

# X.690 8.1.2: universal class tags.
_INTEGER = 0x02
_OCTET_STRING = 0x04
_OBJECT_IDENTIFIER = 0x06
_ENUMERATED = 0x0A
_SEQUENCE = 0x30  # constructed


def _length(n: int) -> bytes:
    # X.690 10.1: the definite form, short if below 128, else the minimal number of length octets.
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def sequence(*items: bytes) -> bytes:
    return tlv(_SEQUENCE, b"".join(items))


def octet_string(value: bytes) -> bytes:
    return tlv(_OCTET_STRING, value)


def _twos_complement(n: int) -> bytes:
    # X.690 8.3.2: two's complement in the fewest octets (a leading 0x00 keeps 128..255 positive).
    return n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)


def integer(n: int) -> bytes:
    return tlv(_INTEGER, _twos_complement(n))


def enumerated(n: int) -> bytes:
    return tlv(_ENUMERATED, _twos_complement(n))


def object_identifier(dotted: str) -> bytes:
    # X.690 8.19: the first two arcs share one subidentifier; each is base 128, high bit = "more".
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40) or min(arcs) < 0:
        raise ValueError(f"not an object identifier: {dotted}")
    out = bytearray()
    for sub in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [sub & 0x7F]
        sub >>= 7
        while sub:
            chunk.append(0x80 | (sub & 0x7F))
            sub >>= 7
        out += bytes(reversed(chunk))
    return tlv(_OBJECT_IDENTIFIER, bytes(out))

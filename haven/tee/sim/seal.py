"""Sealing: data encrypted under an EGETKEY seal key, in the layout of the Intel SGX SDK's ``sgx_seal_data``.

A sealed blob is ``sgx_sealed_data_t`` (Intel SGX SDK, ``sgx_tseal.h``)::

    KEYREQUEST (512)  the request that re-derives the key: policy, KEYID, ISVSVN, CPUSVN, masks
    plain_text_offset u32, reserved (12)
    aes_data: payload_size u32, reserved (12), payload_tag (16)
    payload: ciphertext, then the additional authenticated data in clear

Every seal draws a fresh random 32-byte KEYID, so every blob has its own AES-128 key; that is why a
fixed all-zero 96-bit IV is safe, as in the SDK. Beyond the SDK, the whole header up to the tag is
part of the GCM associated data (before the caller's AAD), so a change to any byte of the blob —
header, ciphertext, tag or AAD — fails authentication.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from haven.errors import FormatError, KeyRequestError, SealError
from haven.structs import Struct, field_at
from haven.tee.sgx.structs import Attributes, KeyName, KeyPolicy, KeyRequest

if TYPE_CHECKING:
    from haven.tee.sim.cpu import SimEnclave

# The SDK's defaults for which attribute and MISCSELECT bits a seal key depends on (sgx_tseal.h,
# TSEAL_DEFAULT_FLAGSMASK = ~FLAGS_NON_SECURITY_BITS, TSEAL_DEFAULT_MISCMASK = ~MISC_NON_SECURITY_BITS):
# bits without security effect (MODE64BIT, PROVISIONKEY, EINITTOKEN_KEY, reserved 55:6, XFRM) are
# left out, so sealed data survives e.g. an enclave enabling AVX; INIT and DEBUG always count.
SEAL_FLAGS_MASK = 0xFF0000000000000B
SEAL_XFRM_MASK = 0
SEAL_MISCMASK = 0xF0000000
GCM_IV = bytes(12)  # safe: the key is fresh for every blob (see the module docstring)
TAG_SIZE = 16
MAX_SEAL_PAYLOAD = 1 << 30  # ciphertext plus AAD; anything larger is refused as absurd
_SEAL_POLICY_BITS = 0x3F
_BYTES = (bytes, bytearray, memoryview)
# CipherContext.update_into wants room for one block beyond the data (cryptography's API contract).
_UPDATE_SLACK = 15


@dataclass
class AesGcmData(Struct):
    """``sgx_aes_gcm_data_t`` without its flexible ``payload[]`` (32 bytes)."""

    SIZE: ClassVar[int] = 32
    payload_size: int = field_at(0, "<I")
    reserved: bytes = field_at(4, "12s", reserved=True)
    payload_tag: bytes = field_at(16, "16s")


@dataclass
class SealedDataHeader(Struct):
    """``sgx_sealed_data_t`` up to its payload (560 bytes)."""

    SIZE: ClassVar[int] = 560
    key_request: KeyRequest = field_at(0, KeyRequest)
    plain_text_offset: int = field_at(512, "<I")
    reserved: bytes = field_at(516, "12s", reserved=True)
    aes_data: AesGcmData = field_at(528, AesGcmData)


# Everything before payload_tag is authenticated as GCM associated data.
_TAG_AT = SealedDataHeader.offset_of("aes_data") + AesGcmData.offset_of("payload_tag")


def sealed_size(data_len: int, aad_len: int = 0) -> int:
    """The size of the blob ``seal`` makes for this much data and AAD."""
    return SealedDataHeader.SIZE + data_len + aad_len


def _check_policy(policy: int) -> int:
    if isinstance(policy, bool) or not isinstance(policy, int) or policy & ~_SEAL_POLICY_BITS:
        raise SealError(f"invalid seal key policy {policy!r}")
    if not policy & (KeyPolicy.MRENCLAVE | KeyPolicy.MRSIGNER):
        raise SealError("a seal key policy must name MRENCLAVE or MRSIGNER")
    return int(policy)


def seal(
    enclave: SimEnclave,
    data: bytes | bytearray | memoryview,
    policy: KeyPolicy = KeyPolicy.MRSIGNER,
    aad: bytes | bytearray | memoryview = b"",
) -> bytes:
    """Encrypt ``data`` (and authenticate ``aad``) to this enclave's identity under ``policy``.

    MRENCLAVE: only this very enclave can unseal. MRSIGNER: any enclave of the same signer and
    ISVPRODID whose ISVSVN is at least this one's. The sealer's own ISVSVN and the current CPUSVN
    go into the request (the CPUSVN as EREPORT would report it), as ``sgx_seal_data`` does.
    """
    if not isinstance(data, _BYTES) or not isinstance(aad, _BYTES):
        raise SealError("seal takes bytes")
    data_len, aad_len = memoryview(data).nbytes, memoryview(aad).nbytes
    if data_len + aad_len > MAX_SEAL_PAYLOAD:
        raise SealError(f"cannot seal more than {MAX_SEAL_PAYLOAD} bytes of data and AAD")
    policy_bits = _check_policy(policy)
    # The SDK learns these from a REPORT to self; the simulation reads the same values directly.
    request = KeyRequest(
        keyname=KeyName.SEAL_KEY,
        keypolicy=policy_bits,
        isvsvn=enclave.isvsvn,
        cpusvn=enclave.platform.config.cpusvn,
        attributemask=Attributes(flags=SEAL_FLAGS_MASK, xfrm=SEAL_XFRM_MASK),
        keyid=os.urandom(32),
        miscmask=SEAL_MISCMASK,
        configsvn=enclave.configsvn,
    )
    try:
        key = enclave.egetkey(request)
    except KeyRequestError as e:
        raise SealError(f"cannot derive a seal key: {e}") from None
    header = SealedDataHeader(
        key_request=request,
        plain_text_offset=data_len,
        aes_data=AesGcmData(payload_size=data_len + aad_len),
    ).to_bytes()[:_TAG_AT]
    # Encrypt straight into the blob: a 1 MiB payload is then copied once, not three times.
    start = SealedDataHeader.SIZE
    blob = bytearray(start + data_len + aad_len + _UPDATE_SLACK)
    with memoryview(blob) as view:
        view[:_TAG_AT] = header
        enc = Cipher(algorithms.AES(key), modes.GCM(GCM_IV)).encryptor()
        enc.authenticate_additional_data(header)
        enc.authenticate_additional_data(aad)
        enc.update_into(data, view[start:])
        enc.finalize()
        view[_TAG_AT:start] = enc.tag
        view[start + data_len : start + data_len + aad_len] = aad
    del blob[start + data_len + aad_len :]
    return bytes(blob)


def parse_sealed(blob: bytes | bytearray | memoryview) -> SealedDataHeader:
    """Strictly parse a blob's header and check its lengths and request (SealError if not)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise SealError("a sealed blob must be bytes")
    size = memoryview(blob).nbytes
    if size < SealedDataHeader.SIZE:
        raise SealError(f"sealed blob of {size} bytes is shorter than its header")
    try:
        header = SealedDataHeader.from_bytes(bytes(blob[: SealedDataHeader.SIZE]))
    except FormatError as e:
        raise SealError(f"sealed blob header: {e}") from None
    payload = header.aes_data.payload_size
    if payload > MAX_SEAL_PAYLOAD:
        raise SealError(f"sealed blob claims a payload of {payload} bytes, more than {MAX_SEAL_PAYLOAD}")
    if payload != size - SealedDataHeader.SIZE:
        carried = size - SealedDataHeader.SIZE
        raise SealError(f"sealed blob claims a payload of {payload} bytes but carries {carried}")
    if header.plain_text_offset > payload:
        raise SealError(f"sealed blob's AAD offset {header.plain_text_offset} is beyond its payload")
    req = header.key_request
    if req.keyname != KeyName.SEAL_KEY:
        raise SealError(f"sealed blob's key request names key {req.keyname}, not SEAL_KEY")
    _check_policy(req.keypolicy)
    return header


def unseal(enclave: SimEnclave, blob: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
    """Decrypt a blob made by ``seal``: (data, aad). SealError if it is malformed, changed or not ours."""
    header = parse_sealed(blob)
    try:
        key = enclave.egetkey(header.key_request)
    except KeyRequestError as e:
        raise SealError(f"this enclave cannot derive the blob's seal key: {e}") from None
    view = memoryview(blob)
    start = SealedDataHeader.SIZE
    ct_end = start + header.plain_text_offset
    aad = bytes(view[ct_end:])
    dec = Cipher(algorithms.AES(key), modes.GCM(GCM_IV, header.aes_data.payload_tag)).decryptor()
    dec.authenticate_additional_data(view[:_TAG_AT])
    dec.authenticate_additional_data(aad)
    data = dec.update(view[start:ct_end])
    try:
        dec.finalize()  # checks the tag; the plaintext is returned only if it matches
    except InvalidTag:
        raise SealError(
            "sealed data failed authentication: it was changed, or sealed by another enclave or platform"
        ) from None
    return data, aad

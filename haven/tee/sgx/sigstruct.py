"""Enclave signing: SIGSTRUCT, as an enclave author makes it and as EINIT checks it.

Intel SDM Vol. 3D, "Enclave Signature Structure (SIGSTRUCT)" and its table "Layout of Enclave
Signature Structure (SIGSTRUCT)"; the EINIT instruction page for what the processor verifies.

- The key is RSA-3072 with public exponent 3 (the table gives MODULUS 384 bytes, EXPONENT = 3).
- The signature is RSASSA-PKCS1-v1_5 with SHA-256 over bytes 0..127 ‖ 900..1027 of the structure
  (HEADER..RESERVED and MISCSELECT..ISVSVN); MODULUS, SIGNATURE, Q1 and Q2 are stored little-endian.
- Q1 = floor(S² / M) and Q2 = floor((S³ − Q1·S·M) / M) let EINIT check S³ mod M without a division.
- MRSIGNER is SHA-256 of MODULUS exactly as stored (SDM "MRSIGNER"; EINIT writes it to SECS).

Key files are PEM (PKCS#1 or PKCS#8, unencrypted). The errors raised for them name the file and
what is wrong with it, never any part of its contents.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from haven.errors import EnclaveInitError, FormatError, KeyFileError
from haven.tee.sgx.structs import (
    SIGSTRUCT_HEADER,
    SIGSTRUCT_HEADER2,
    SIGSTRUCT_VENDOR_INTEL,
    Attributes,
    Sigstruct,
)

# SIGSTRUCT table: MODULUS is 384 bytes, EXPONENT must be 3.
RSA_BITS = 3072
RSA_EXPONENT = 3
_NUM_BYTES = RSA_BITS // 8
# SIGSTRUCT.VENDOR: 0 for any author, 0x8086 for Intel (SIGSTRUCT table).
_VENDORS = (0, SIGSTRUCT_VENDOR_INTEL)
# A PEM RSA-3072 private key is about 2.5 KB; anything far larger is not a key file.
_MAX_KEY_FILE = 64 * 1024
# RFC 1421 header that OpenSSL writes into an encrypted traditional (PKCS#1) PEM key.
_PROC_TYPE_ENCRYPTED = b"Proc-Type: 4,ENCRYPTED"


def generate_signing_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-3072 key with exponent 3, the only kind EINIT accepts."""
    return rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=RSA_BITS)


def _check_key_shape(n: int, e: int, what: str) -> None:
    if n.bit_length() != RSA_BITS:
        raise KeyFileError(f"{what} is RSA-{n.bit_length()}; SGX enclave signing needs RSA-{RSA_BITS}")
    if e != RSA_EXPONENT:
        raise KeyFileError(f"{what} has public exponent {e}; SGX enclave signing needs {RSA_EXPONENT}")


def load_signing_key(path: Path) -> rsa.RSAPrivateKey:
    """Read an enclave signing key; every way the file can be wrong is a one-line KeyFileError."""
    path = Path(path)
    what = f"signing key {path}"
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{what}: no such file") from None
    except OSError as e:
        raise KeyFileError(f"{what}: cannot read it ({e.strerror or type(e).__name__})") from None
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{what}: larger than {_MAX_KEY_FILE} bytes, not a key file")
    labels = _pem_labels(data)
    if not labels:
        raise KeyFileError(f"{what}: not a PEM file")
    if not any(label.endswith("PRIVATE KEY") for label in labels):
        if any(label.endswith("PUBLIC KEY") for label in labels):
            raise KeyFileError(f"{what}: is a public key; signing needs the private key")
        raise KeyFileError(f"{what}: holds no private key")
    if "ENCRYPTED PRIVATE KEY" in labels or _PROC_TYPE_ENCRYPTED in data:
        raise KeyFileError(f"{what}: is encrypted; give an unencrypted PEM key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{what}: is encrypted; give an unencrypted PEM key") from None
    except UnsupportedAlgorithm:
        raise KeyFileError(f"{what}: not an RSA private key") from None
    except ValueError:
        # The library's message may quote the file; ours says only what kind of file it is not.
        raise KeyFileError(f"{what}: not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{what}: is a {type(key).__name__}, not an RSA private key")
    pub = key.public_key().public_numbers()
    _check_key_shape(pub.n, pub.e, what)
    return key


def _pem_labels(data: bytes) -> set[str]:
    """The labels of the PEM blocks in ``data`` (RFC 7468 "-----BEGIN label-----" lines)."""
    labels = set()
    for line in data.splitlines():
        line = line.strip()
        if line.startswith(b"-----BEGIN ") and line.endswith(b"-----"):
            labels.add(line[11:-5].decode("ascii", "replace"))
    return labels


def save_signing_key(key: rsa.RSAPrivateKey, path: Path, *, overwrite: bool = False) -> None:
    """Write ``key`` as unencrypted PEM (PKCS#1), mode 0600, atomically.

    The key is written to a private temporary file in the same directory, flushed to disk, and
    then linked into place, so a crash leaves either no file or the whole key, never a part of it.
    Without ``overwrite`` an existing file is refused, even one created while we were writing.
    """
    path = Path(path)
    pub = key.public_key().public_numbers()
    _check_key_shape(pub.n, pub.e, "the key to save")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    directory = path.parent
    if not overwrite and path.exists():
        raise KeyFileError(f"signing key {path}: already exists; not overwriting it")
    if not directory.is_dir():
        raise KeyFileError(f"signing key {path}: directory {directory} does not exist")
    tmp = directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as e:
        raise KeyFileError(f"signing key {path}: cannot write it ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # exactly 0600, whatever the umask took away
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the name exists: no window in which another file is replaced.
            os.link(tmp, path)
            tmp.unlink()
    except FileExistsError:
        raise KeyFileError(f"signing key {path}: already exists; not overwriting it") from None
    except OSError as e:
        raise KeyFileError(f"signing key {path}: cannot write it ({e.strerror})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    # Make the new directory entry durable too; not every platform lets a directory be opened.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def bcd_date(date: datetime.date) -> int:
    """SIGSTRUCT.DATE: yyyymmdd in binary-coded decimal, e.g. 2016-01-09 is 0x20160109."""
    return int(f"{date.year:04d}{date.month:02d}{date.day:02d}", 16)


def _check_range(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise FormatError(f"SIGSTRUCT {name} {value!r} is not a {bits}-bit unsigned value")


def _check_len(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise FormatError(f"SIGSTRUCT {name} must be {size} bytes")


def _q1_q2(s: int, m: int) -> tuple[bytes, bytes]:
    # SIGSTRUCT table, Q1 and Q2: the quotients EINIT uses to check S³ mod M.
    q1 = s * s // m
    q2 = (s * s * s - q1 * s * m) // m
    return q1.to_bytes(_NUM_BYTES, "little"), q2.to_bytes(_NUM_BYTES, "little")


def sign_enclave(
    key: rsa.RSAPrivateKey,
    *,
    enclavehash: bytes,
    attributes: Attributes,
    attributemask: Attributes,
    miscselect: int,
    miscmask: int,
    isvprodid: int,
    isvsvn: int,
    date: datetime.date | None = None,
    vendor: int = 0,
    swdefined: int = 0,
    isvfamilyid: bytes = bytes(16),
    isvextprodid: bytes = bytes(16),
) -> Sigstruct:
    """Make and sign the SIGSTRUCT for an enclave whose MRENCLAVE is ``enclavehash``."""
    pub = key.public_key().public_numbers()
    _check_key_shape(pub.n, pub.e, "the signing key")
    _check_len("ENCLAVEHASH", enclavehash, 32)
    _check_len("ISVFAMILYID", isvfamilyid, 16)
    _check_len("ISVEXTPRODID", isvextprodid, 16)
    for name, value, bits in (
        ("MISCSELECT", miscselect, 32),
        ("MISCMASK", miscmask, 32),
        ("SWDEFINED", swdefined, 32),
        ("ISVPRODID", isvprodid, 16),
        ("ISVSVN", isvsvn, 16),
    ):
        _check_range(name, value, bits)
    if vendor not in _VENDORS:
        raise FormatError(f"SIGSTRUCT VENDOR {vendor:#x} is neither 0 nor {SIGSTRUCT_VENDOR_INTEL:#x}")
    unsigned = Sigstruct(
        header=SIGSTRUCT_HEADER,
        vendor=vendor,
        date=bcd_date(date or datetime.date.today()),
        header2=SIGSTRUCT_HEADER2,
        swdefined=swdefined,
        modulus=pub.n.to_bytes(_NUM_BYTES, "little"),
        exponent=RSA_EXPONENT,
        miscselect=miscselect,
        miscmask=miscmask,
        isvfamilyid=bytes(isvfamilyid),
        attributes=attributes,
        attributemask=attributemask,
        enclavehash=bytes(enclavehash),
        isvextprodid=bytes(isvextprodid),
        isvprodid=isvprodid,
        isvsvn=isvsvn,
    )
    signature = key.sign(unsigned.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())
    s = int.from_bytes(signature, "big")
    q1, q2 = _q1_q2(s, pub.n)
    sig = unsigned.replace(signature=s.to_bytes(_NUM_BYTES, "little"), q1=q1, q2=q2)
    # A faulty signing computation can leak the key; checking the result costs one cube (e = 3).
    verify_sigstruct(sig)
    return sig


def verify_sigstruct(sig: Sigstruct) -> None:
    """What EINIT checks of a SIGSTRUCT on its own; raises EnclaveInitError naming the first fault.

    (EINIT also compares ENCLAVEHASH with the enclave's MRENCLAVE and the attributes with SECS;
    that needs the enclave, so the caller does it.)
    """
    if not hmac.compare_digest(sig.header, SIGSTRUCT_HEADER):
        raise EnclaveInitError("SIGSTRUCT HEADER is not the constant the SDM defines")
    if not hmac.compare_digest(sig.header2, SIGSTRUCT_HEADER2):
        raise EnclaveInitError("SIGSTRUCT HEADER2 is not the constant the SDM defines")
    if sig.vendor not in _VENDORS:
        raise EnclaveInitError(
            f"SIGSTRUCT VENDOR {sig.vendor:#x} is neither 0 nor {SIGSTRUCT_VENDOR_INTEL:#x}"
        )
    if sig.exponent != RSA_EXPONENT:
        raise EnclaveInitError(f"SIGSTRUCT EXPONENT is {sig.exponent}, not {RSA_EXPONENT}")
    m = int.from_bytes(sig.modulus, "little")
    if m.bit_length() != RSA_BITS or not m & 1:
        raise EnclaveInitError(f"SIGSTRUCT MODULUS is not an odd {RSA_BITS}-bit number")
    s = int.from_bytes(sig.signature, "little")
    if s >= m:
        raise EnclaveInitError("SIGSTRUCT SIGNATURE is not less than MODULUS")
    try:
        public = rsa.RSAPublicNumbers(RSA_EXPONENT, m).public_key()
    except ValueError:
        raise EnclaveInitError("SIGSTRUCT MODULUS is not a usable RSA modulus") from None
    try:
        public.verify(s.to_bytes(_NUM_BYTES, "big"), sig.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise EnclaveInitError("SIGSTRUCT SIGNATURE does not verify over the signed fields") from None
    q1, q2 = _q1_q2(s, m)
    if not hmac.compare_digest(sig.q1, q1):
        raise EnclaveInitError("SIGSTRUCT Q1 is not floor(SIGNATURE² / MODULUS)")
    if not hmac.compare_digest(sig.q2, q2):
        raise EnclaveInitError("SIGSTRUCT Q2 is not floor((SIGNATURE³ − Q1·SIGNATURE·MODULUS) / MODULUS)")


def mrsigner_of(sig: Sigstruct) -> bytes:
    """MRSIGNER: SHA-256 of MODULUS as stored in SIGSTRUCT (384 bytes, little-endian)."""
    return hashlib.sha256(sig.modulus).digest()

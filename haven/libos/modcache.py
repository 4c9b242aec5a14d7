"""The compiled-module cache, sealed to the enclave's signer.

Compiling a large module (CPython: 5-6 s) on every start is too slow, but a serialized module is
native code that wasmtime runs without checking it: a cache entry the host could write is code
execution inside the enclave. So every entry is authenticated under a key only enclaves of this
signer and product can derive, bound to the module and to the engine configuration:

    seal    = EGETKEY(SEAL_KEY, KEYPOLICY = MRSIGNER, KEYID = SHA-256("haven module cache"),
                      ISVSVN, CPUSVN and CONFIGSVN from a REPORT to self, ATTRIBUTES mask with DEBUG)
    module  = HKDF-SHA256(seal, info = "haven-modcache/1" || SHA-256(module) || SHA-256(engine config))
    entry   = HKDF-SHA256(module, info = "haven-modcache/1 entry" || salt)   (salt: 32 random bytes
              chosen at each write, kept in the entry's header)
    tag     = AES-256-GMAC(entry, nonce 0, header || payload)   (NIST SP 800-38D: GCM, no plaintext)

MRSIGNER, not MRENCLAVE, so that an entry survives a change of the manifest (argv, environment,
mounts: each a new MRENCLAVE) — otherwise every such change costs a compile. The key still binds
MRSIGNER, ISVPRODID and ISVSVN (SDM Vol. 3D, EGETKEY "Key Derivation"; the SGX SDK's MRSIGNER
sealing binds the same), and the DEBUG attribute: another signer's enclave, another product of
the same signer, another SVN, or a debug enclave (whose memory a debugger can write) derives
another key, so it can neither read nor forge this enclave's entries. Every enclave that can derive
the key was signed by the same owner for the same product and SVN, and the owner is trusted with
exactly that. The module's SHA-256 is inside both the key and the MAC'd header, and the enclave's
module is the one its MRENCLAVE measured: an entry is only ever loaded for the exact module it was
compiled from, under the exact engine configuration (wasmtime version and code-affecting options).

GMAC rather than HMAC-SHA256 because the check sits on every start: over CPython's 25 MB entry
HMAC-SHA256 takes 20 ms, GMAC 1 ms. Every entry has its own key (its salt is fresh), so a GCM key
never authenticates two messages and the fixed nonce is safe.

The entry is copied out of the host's file into enclave-private memory, and the tag is computed
over exactly the bytes copied, before ``Module.deserialize`` sees a byte of them (``PrivateCopy``).
An entry that is missing, for another module or configuration (stale), cut short, or changed
(tampered) is recompiled and rewritten — never loaded, never a crash. The entry's file name is
derived from the module key, so different signers keep different entries and the name reveals
nothing.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import wasmtime
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import AEADDecryptionContext, Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from haven.errors import FormatError
from haven.libos.errors import ModuleError
from haven.structs import Struct, field_at
from haven.tee.sgx.structs import Attributes, KeyName, KeyPolicy, KeyRequest, ReportBody, TargetInfo

MAGIC = b"HAVENMOD"
VERSION = 2
MAC_SIZE = 16  # the GCM tag
NONCE = bytes(12)  # safe: every entry key authenticates exactly one message (see above)
MAX_ENTRY = 2 << 30  # a serialized module larger than this is not ours
KEYID = hashlib.sha256(b"haven module cache").digest()
_INFO = b"haven-modcache/1\x00"
_ENTRY_INFO = b"haven-modcache/1 entry\x00"
# Which ATTRIBUTES the seal key depends on: the Intel SGX SDK's defaults (sgx_tseal.h,
# TSEAL_DEFAULT_FLAGSMASK / TSEAL_DEFAULT_MISCMASK): INIT and DEBUG count, XFRM does not.
_FLAGS_MASK = 0xFF0000000000000B
_MISC_MASK = 0xF0000000


@dataclass
class CacheHeader(Struct):
    """The trailer of a cache entry (``payload || CacheHeader || tag``)."""

    SIZE: ClassVar[int] = 128
    magic: bytes = field_at(0, "8s")
    version: int = field_at(8, "<I")
    reserved0: bytes = field_at(12, "4s", reserved=True)
    module_sha256: bytes = field_at(16, "32s")
    config_sha256: bytes = field_at(48, "32s")
    length: int = field_at(80, "<Q")
    reserved1: bytes = field_at(88, "8s", reserved=True)
    salt: bytes = field_at(96, "32s")


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def gmac(key: bytes, *parts: bytes | memoryview) -> bytes:
    """AES-256-GMAC of the concatenation of ``parts`` (GCM with no plaintext)."""
    enc = Cipher(algorithms.AES(key), modes.GCM(NONCE)).encryptor()
    for part in parts:
        enc.authenticate_additional_data(part)
    enc.finalize()
    return enc.tag


class Status(enum.Enum):
    HIT = "hit"
    MISS = "miss"
    STALE = "stale"
    TAMPERED = "tampered"
    DISABLED = "disabled"


class KeyDeriving(Protocol):
    """The enclave instructions the cache needs (a SimEnclave, or a hardware enclave's)."""

    def target_info(self) -> TargetInfo: ...
    def ereport(self, target: TargetInfo, reportdata: bytes = ...) -> object: ...
    def egetkey(self, request: KeyRequest) -> bytes: ...


def seal_key(enclave: KeyDeriving) -> bytes:
    """The cache's seal key: KEYPOLICY = MRSIGNER (so ISVPRODID is bound too), with the SVNs from a
    REPORT to self and the SDK's attribute mask (DEBUG bound), as the SGX SDK's MRSIGNER sealing
    derives it (``sgx_seal_data_ex`` with ``SGX_KEYPOLICY_MRSIGNER``)."""
    report = enclave.ereport(enclave.target_info())
    body: ReportBody = report.body  # type: ignore[attr-defined]
    return enclave.egetkey(
        KeyRequest(
            keyname=KeyName.SEAL_KEY,
            keypolicy=KeyPolicy.MRSIGNER,
            isvsvn=body.isvsvn,
            cpusvn=body.cpusvn,
            attributemask=Attributes(flags=_FLAGS_MASK, xfrm=0),
            keyid=KEYID,
            miscmask=_MISC_MASK,
            configsvn=body.configsvn,
        )
    )


class ModuleCache:
    """Sealed compiled modules in ``directory`` (a host directory: everything in it is untrusted).

    An entry is ``payload || CacheHeader || tag``: the serialized module first, so that the private
    copy (the payload alone) is exactly the file wasmtime maps.
    """

    def __init__(self, directory: Path, seal: bytes, *, max_bytes: int = 4 << 30) -> None:
        self.directory = Path(directory)
        self._seal = seal
        self.max_bytes = max_bytes  # beyond this, the least recently used entries are removed

    def _key(self, module_sha256: bytes, config_sha256: bytes) -> bytes:
        return _hkdf(self._seal, _INFO + module_sha256 + config_sha256)

    def path_for(self, module_sha256: bytes, config_sha256: bytes) -> Path:
        return self._path(self._key(module_sha256, config_sha256))

    def _path(self, key: bytes) -> Path:
        return self.directory / (hmac.new(key, b"entry name", hashlib.sha256).hexdigest()[:40] + ".cwasm")

    def load(
        self, engine: wasmtime.Engine, wasm: bytes, config_sha256: bytes, module_sha256: bytes | None = None
    ) -> tuple[wasmtime.Module, Status]:
        """The compiled module: from a verified entry, or compiled (and the entry rewritten).
        ``module_sha256`` saves hashing the module again when the caller has verified it already."""
        if module_sha256 is None:
            module_sha256 = hashlib.sha256(wasm).digest()
        key = self._key(module_sha256, config_sha256)
        path = self._path(key)
        try:
            copy = PrivateCopy(path, key)
        except (FileNotFoundError, NotADirectoryError):
            status = Status.MISS
        except OSError:
            status = Status.TAMPERED
        else:
            with copy:
                status = _verify(copy, module_sha256, config_sha256)
                if status == Status.HIT:
                    try:
                        module = copy.module(engine)
                    except wasmtime.WasmtimeError:
                        status = Status.STALE  # authentic, but this wasmtime cannot load it
                    else:
                        with contextlib.suppress(OSError):
                            os.utime(path)  # recently used: evicted last
                        return module, Status.HIT
        module = compile_module(engine, wasm)
        self._write(path, key, module_sha256, config_sha256, bytes(module.serialize()))
        return module, status

    def _write(
        self, path: Path, key: bytes, module_sha256: bytes, config_sha256: bytes, payload: bytes
    ) -> None:
        """Best effort: a cache that cannot be written only costs the next start a compile."""
        salt = os.urandom(32)
        header = CacheHeader(
            magic=MAGIC,
            version=VERSION,
            module_sha256=module_sha256,
            config_sha256=config_sha256,
            length=len(payload),
            salt=salt,
        ).to_bytes()
        tag = gmac(_hkdf(key, _ENTRY_INFO + salt), header, payload)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(payload)
                f.write(header)
                f.write(tag)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self._evict(keep=path)

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used entries while the cache holds more than ``max_bytes``
        (every enclave identity and module gets its own entry, so old ones pile up otherwise)."""
        entries = []
        try:
            for e in os.scandir(self.directory):
                if e.name.endswith(".cwasm") and e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    entries.append((st.st_mtime_ns, st.st_size, Path(e.path)))
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path != keep:
                with contextlib.suppress(OSError):
                    path.unlink()
                    total -= size


def _verify(copy: PrivateCopy, module_sha256: bytes, config_sha256: bytes) -> Status:
    """The tag (checked while the entry was copied), then what the header says."""
    if not copy.authentic:
        return Status.TAMPERED
    try:
        header = CacheHeader.from_bytes(copy.header)
    except FormatError:
        return Status.TAMPERED
    if (
        header.magic != MAGIC
        or header.version != VERSION
        or not hmac.compare_digest(header.module_sha256, module_sha256)
        or not hmac.compare_digest(header.config_sha256, config_sha256)
    ):
        return Status.STALE
    if header.length != copy.size:
        return Status.TAMPERED
    return Status.HIT


_TRAILER = CacheHeader.SIZE + MAC_SIZE
# The copy moves through one private buffer this large: small enough to stay in the core's cache
# between the read that fills it, the GMAC over it and the write that empties it.
CHUNK = 256 << 10
_MEMFD = hasattr(os, "memfd_create") and hasattr(fcntl, "F_ADD_SEALS")
# fcntl(2), "File seals": no write (nor a writable shared mapping), no shrinking, no growing, and
# no change to these seals: the copy is immutable for everyone, this process included.
_SEALS = (fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL) if _MEMFD else 0


class PrivateCopy:
    """An entry's payload copied out of the host's file into enclave-private memory, with the tag
    computed over exactly the bytes copied.

    The host's file is read once: the trailer (header and tag), then the payload a chunk at a time
    into a private buffer; each chunk goes into the GMAC from that buffer and is then written, from
    the same buffer, to the copy. So the bytes the tag covers are the bytes wasmtime loads, whatever
    the host does to its file meanwhile — a rewrite or a swap after a chunk was read never reaches
    the copy, and a file cut short is refused (``OSError``). One pass over the data instead of a copy
    and a second read for the MAC.

    On Linux the copy is a memfd, sealed against any write once it is full; wasmtime maps it
    (``Module.deserialize_file``). Elsewhere it is a bytearray. ``authentic`` says whether the tag
    verified; ``header`` is the entry's header as copied (not yet parsed).
    """

    def __init__(self, path: Path, key: bytes) -> None:
        self._fd: int | None = None
        self._data = bytearray()
        self.authentic = False
        src = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            total = os.fstat(src).st_size
            if not _TRAILER <= total <= MAX_ENTRY:
                raise OSError(f"a cache entry of {total} bytes")
            self.size = total - _TRAILER
            trailer = bytearray(_TRAILER)
            _read_exactly(src, memoryview(trailer), self.size)
            self.header, tag = bytes(trailer[: CacheHeader.SIZE]), bytes(trailer[CacheHeader.SIZE :])
            salt = self.header[CacheHeader.offset_of("salt") :]
            mac = Cipher(algorithms.AES(_hkdf(key, _ENTRY_INFO + salt)), modes.GCM(NONCE, tag)).decryptor()
            mac.authenticate_additional_data(self.header)
            try:
                self._copy(src, mac)
            except BaseException:
                self.__exit__()
                raise
        finally:
            os.close(src)
        try:
            mac.finalize()
        except InvalidTag:
            return
        self.authentic = True

    def _copy(self, src: int, mac: AEADDecryptionContext) -> None:
        if not _MEMFD:
            self._data = bytearray(self.size)
            view = memoryview(self._data)
            for off in range(0, self.size, CHUNK):
                chunk = view[off : off + CHUNK]
                _read_exactly(src, chunk, off)
                mac.authenticate_additional_data(chunk)
            return
        fd = self._fd = os.memfd_create("haven-module", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        raw = bytearray(min(CHUNK, self.size))
        buf, zeros = memoryview(raw), bytes(len(raw))
        for off in range(0, self.size, CHUNK):
            chunk = buf[: min(CHUNK, self.size - off)]
            _read_exactly(src, chunk, off)
            mac.authenticate_additional_data(chunk)
            # A chunk of zeros (CPython's memory image has megabytes of them) stays a hole: it reads
            # as zeros, costs no page until touched, and the seals keep it a hole.
            if len(chunk) < len(raw) or raw != zeros:
                _write_exactly(fd, chunk, off)
        os.ftruncate(fd, self.size)  # the size, should the last chunk be a hole
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)

    def module(self, engine: wasmtime.Engine) -> wasmtime.Module:
        if self._fd is None:
            return wasmtime.Module.deserialize(engine, self._data)
        return wasmtime.Module.deserialize_file(engine, f"/proc/self/fd/{self._fd}")

    def __enter__(self) -> PrivateCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _read_exactly(fd: int, into: memoryview, offset: int) -> None:
    got = 0
    while got < len(into):
        n = os.preadv(fd, [into[got:]], offset + got)
        if not n:
            raise OSError("the cache entry shrank while it was copied")
        got += n


def _write_exactly(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def compile_module(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
    try:
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        raise ModuleError(f"the module does not compile: {lines[-1] if lines else 'unknown error'}") from None


def load_module(
    engine: wasmtime.Engine,
    wasm: bytes,
    config_sha256: bytes,
    cache: ModuleCache | None,
    module_sha256: bytes | None = None,
) -> tuple[wasmtime.Module, Status]:
    if cache is None:
        return compile_module(engine, wasm), Status.DISABLED
    return cache.load(engine, wasm, config_sha256, module_sha256)

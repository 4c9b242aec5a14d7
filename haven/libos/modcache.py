"""The compiled-module cache, sealed to the enclave.

Compiling a large module (CPython: 5-6 s) on every start is too slow, but a serialized module is
native code that wasmtime runs without checking it: a cache entry the host could write is code
execution inside the enclave. So every entry is authenticated under a key only this enclave can
derive, bound to the module and to the engine configuration:

    seal    = EGETKEY(SEAL_KEY, KEYPOLICY = MRENCLAVE, KEYID = SHA-256("haven module cache"), ...)
    module  = HKDF-SHA256(seal, info = "haven-modcache/1" || SHA-256(module) || SHA-256(engine config))
    entry   = HKDF-SHA256(module, info = "haven-modcache/1 entry" || salt)   (salt: 32 random bytes
              chosen at each write, kept in the entry's header)
    tag     = AES-256-GMAC(entry, nonce 0, header || payload)   (NIST SP 800-38D: GCM, no plaintext)

GMAC rather than HMAC-SHA256 because the check sits on every start: over CPython's 25 MB entry
HMAC-SHA256 takes 20 ms, GMAC 1 ms. Every entry has its own key (its salt is fresh), so a GCM key
never authenticates two messages and the fixed nonce is safe.

The entry is copied out of the host's file into enclave-private memory first; that copy is verified
in full before ``Module.deserialize`` sees a byte of it. An entry that is missing, for another module
or configuration (stale), cut short, or changed (tampered) is recompiled and rewritten — never
loaded, never a crash. The entry's file name is derived from the module key, so different enclaves
keep different entries and the name reveals nothing.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import hmac
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import wasmtime
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
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
    """The MRENCLAVE-bound seal key of the cache; the request's SVNs come from a REPORT to self,
    as the SGX SDK's sealing does."""
    report = enclave.ereport(enclave.target_info())
    body: ReportBody = report.body  # type: ignore[attr-defined]
    return enclave.egetkey(
        KeyRequest(
            keyname=KeyName.SEAL_KEY,
            keypolicy=KeyPolicy.MRENCLAVE,
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

    An entry is ``payload || CacheHeader || tag``: the serialized module first, so that once it is
    verified, the private copy cut to the payload is exactly the file wasmtime maps.
    """

    def __init__(self, directory: Path, seal: bytes, *, max_bytes: int = 4 << 30) -> None:
        self.directory = Path(directory)
        self._seal = seal
        self.max_bytes = max_bytes  # beyond this, the least recently used entries are removed

    def _key(self, module_sha256: bytes, config_sha256: bytes) -> bytes:
        return _hkdf(self._seal, _INFO + module_sha256 + config_sha256)

    def path_for(self, module_sha256: bytes, config_sha256: bytes) -> Path:
        key = self._key(module_sha256, config_sha256)
        return self.directory / (hmac.new(key, b"entry name", hashlib.sha256).hexdigest()[:40] + ".cwasm")

    def load(
        self, engine: wasmtime.Engine, wasm: bytes, config_sha256: bytes, module_sha256: bytes | None = None
    ) -> tuple[wasmtime.Module, Status]:
        """The compiled module: from a verified entry, or compiled (and the entry rewritten).
        ``module_sha256`` saves hashing the module again when the caller has verified it already."""
        if module_sha256 is None:
            module_sha256 = hashlib.sha256(wasm).digest()
        key = self._key(module_sha256, config_sha256)
        path = self.path_for(module_sha256, config_sha256)
        try:
            copy = PrivateCopy(path)
        except (FileNotFoundError, NotADirectoryError):
            status = Status.MISS
        except OSError:
            status = Status.TAMPERED
        else:
            with copy:
                status = _verify(copy, key, module_sha256, config_sha256)
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


def _verify(copy: PrivateCopy, key: bytes, module_sha256: bytes, config_sha256: bytes) -> Status:
    """The tag first (over the trailer's header and the whole payload), then what the header says."""
    header_raw, tag = copy.trailer[: CacheHeader.SIZE], copy.trailer[CacheHeader.SIZE :]
    salt = header_raw[CacheHeader.offset_of("salt") :]
    dec = Cipher(algorithms.AES(_hkdf(key, _ENTRY_INFO + salt)), modes.GCM(NONCE, tag)).decryptor()
    dec.authenticate_additional_data(header_raw)
    dec.authenticate_additional_data(copy.payload())
    try:
        dec.finalize()
    except InvalidTag:
        return Status.TAMPERED
    try:
        header = CacheHeader.from_bytes(header_raw)
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


class PrivateCopy:
    """An entry copied out of the host's file before anything is checked, so that what is verified is
    what is loaded. On Linux the copy is a memfd (kernel-to-kernel copy, then cut to the payload and
    sealed against any write); wasmtime maps it directly. Elsewhere it is a bytes object."""

    def __init__(self, path: Path) -> None:
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._data = b""
        src = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            total = os.fstat(src).st_size
            if not _TRAILER <= total <= MAX_ENTRY:
                raise OSError(f"a cache entry of {total} bytes")
            self.size = total - _TRAILER
            if hasattr(os, "memfd_create") and hasattr(fcntl, "F_ADD_SEALS"):
                try:
                    self._memfd(src, total)
                except BaseException:
                    self.__exit__()
                    raise
            else:
                self._data = _read_all(src, total)
                self.trailer = self._data[self.size :]
        finally:
            os.close(src)

    def _memfd(self, src: int, total: int) -> None:
        fd = os.memfd_create("haven-module", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self._fd = fd
        copied = 0
        while copied < total:
            n = os.sendfile(fd, src, copied, total - copied)
            if not n:
                raise OSError("the cache entry shrank while it was copied")
            copied += n
        self.trailer = os.pread(fd, _TRAILER, self.size)
        os.ftruncate(fd, self.size)
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
        )
        if self.size:
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # fault it in once, not page by page
            self._map = mmap.mmap(fd, self.size, flags=flags, prot=mmap.PROT_READ)

    def payload(self) -> memoryview:
        if self._fd is None:
            return memoryview(self._data)[: self.size]
        return memoryview(self._map) if self._map is not None else memoryview(b"")

    def module(self, engine: wasmtime.Engine) -> wasmtime.Module:
        if self._fd is None:
            return wasmtime.Module.deserialize(engine, self._data[: self.size])
        return wasmtime.Module.deserialize_file(engine, f"/proc/self/fd/{self._fd}")

    def __enter__(self) -> PrivateCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._map is not None:
            self._map.close()
        if self._fd is not None:
            os.close(self._fd)


def _read_all(fd: int, total: int) -> bytes:
    parts, got = [], 0
    while got < total:
        chunk = os.read(fd, min(total - got, 1 << 24))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


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

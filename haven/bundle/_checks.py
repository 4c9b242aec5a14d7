"""Value checks for the manifest: each takes the value and its dotted path, and returns it checked or
raises :class:`ManifestError` naming the path. Shared by the TOML reader and the canonical reader, so
both accept exactly the same values."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from haven.errors import ManifestError

MAX_KEY_FILE = 64 << 10
MAX_TEXT = 4096  # bytes in one argument, environment value, path or URL
MAX_ITEMS = 1024  # arguments, environment variables, mounts, listeners
WASM_PAGE = 64 << 10  # WebAssembly core spec 2.0, "Memory Types": limits count 64 KiB pages
WASM32_MAX_MEMORY = 1 << 32  # 65536 pages, the most a 32-bit memory can address
MAX_TIME_LIMIT = 365 * 24 * 3600

_MISSING: Any = object()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SIZE = re.compile(r"(\d{1,12})\s*(B|KiB|MiB|GiB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_DURATION = re.compile(r"(\d{1,9})\s*(s|m|h)")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


class Table:
    """A TOML table or JSON object being read: refuses unknown keys up front, so a typo is reported as
    itself rather than as the missing key it was meant to be."""

    def __init__(self, data: object, where: str, allowed: set[str], *, strict: bool) -> None:
        if not isinstance(data, dict):
            raise ManifestError(f"{where or 'manifest'}: must be a table")
        for key in sorted(data, key=str):
            if key not in allowed:
                raise ManifestError(f"{_join(where, str(key))}: unknown key")
        self._data: dict[str, object] = data
        self._where = where
        self._strict = strict

    def path(self, key: str) -> str:
        return _join(self._where, key)

    def get(self, key: str, default: object = _MISSING) -> object:
        """The value; if absent, ``default`` (unless strict, or no default: then it is an error)."""
        if key in self._data:
            return self._data[key]
        if self._strict or default is _MISSING:
            raise ManifestError(f"{self.path(key)}: missing")
        return default

    def table(self, key: str, allowed: set[str], *, required: bool) -> Table | None:
        if key not in self._data and not required and not self._strict:
            return None
        return Table(self.get(key), self.path(key), allowed, strict=self._strict)

    def array_of_tables(self, key: str) -> Iterator[tuple[str, object]]:
        items = self.get(key, [])
        if not isinstance(items, list):
            raise ManifestError(f"{self.path(key)}: must be an array of tables ([[{key}]])")
        if len(items) > MAX_ITEMS:
            raise ManifestError(f"{self.path(key)}: more than {MAX_ITEMS} entries")
        for i, item in enumerate(items):
            yield f"{self.path(key)}[{i}]", item


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def refuse_float(text: str) -> Any:
    raise ValueError(f"number {text} is not an integer")


def text(value: object, where: str) -> str:
    """A string that can be passed to a program: valid Unicode, no NUL, bounded."""
    if not isinstance(value, str):
        raise ManifestError(f"{where}: must be a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ManifestError(f"{where}: not valid Unicode") from None
    if "\0" in value:
        raise ManifestError(f"{where}: contains a NUL character")
    if size > MAX_TEXT:
        raise ManifestError(f"{where}: longer than {MAX_TEXT} bytes")
    return value


def text_list(value: object, where: str, *, minimum: int) -> list[str]:
    if not isinstance(value, list):
        raise ManifestError(f"{where}: must be an array of strings")
    if len(value) < minimum:
        raise ManifestError(f"{where}: needs at least {minimum} element(s) (argv[0] is the program name)")
    if len(value) > MAX_ITEMS:
        raise ManifestError(f"{where}: more than {MAX_ITEMS} elements")
    return [text(v, f"{where}[{i}]") for i, v in enumerate(value)]


def env_table(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ManifestError(f'{where}: must be a table of NAME = "value"')
    if len(value) > MAX_ITEMS:
        raise ManifestError(f"{where}: more than {MAX_ITEMS} variables")
    out = []
    for name, val in value.items():
        at = f"{where}.{name}"
        text(name, at)
        if not name or "=" in name:
            raise ManifestError(f"{at}: an environment variable name must be non-empty and contain no '='")
        out.append((name, text(val, at)))
    return tuple(sorted(out))


def choice(value: object, where: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        options = " or ".join(repr(x) for x in choices)
        raise ManifestError(f"{where}: must be {options}")
    return value


def integer(value: object, where: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ManifestError(f"{where}: must be an integer")
    if not lo <= value <= hi:
        raise ManifestError(f"{where}: {value} is out of range {lo}..{hi}")
    return value


def boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ManifestError(f"{where}: must be true or false")
    return value


def memory_size(value: object, where: str, *, text: bool) -> int:
    """Bytes of linear memory: an integer, or (in TOML) a string such as "512MiB"."""
    if isinstance(value, str) and text:
        m = _SIZE.fullmatch(value.strip())
        if not m:
            raise ManifestError(
                f'{where}: {value!r} is not a size (write e.g. "512MiB"; units B, KiB, MiB, GiB)'
            )
        value = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    size = integer(value, where, WASM_PAGE, WASM32_MAX_MEMORY)
    if size % WASM_PAGE:
        raise ManifestError(f"{where}: {size} bytes is not a whole number of 64 KiB WebAssembly pages")
    return size


def duration(value: object, where: str, *, text: bool) -> int:
    """Seconds: an integer, or (in TOML) "0" or a string such as "30s", "5m", "1h"."""
    if isinstance(value, str) and text:
        if value.strip() == "0":
            value = 0
        else:
            m = _DURATION.fullmatch(value.strip())
            if not m:
                raise ManifestError(
                    f'{where}: {value!r} is not a duration (write "0", or e.g. "30s", "5m", "1h")'
                )
            value = int(m.group(1)) * _DURATION_UNITS[m.group(2)]
    return integer(value, where, 0, MAX_TIME_LIMIT)


def guest_path(value: object, where: str) -> str:
    """An absolute, normalised guest path: '/' or '/a/b', no empty, '.' or '..' components."""
    path = text(value, where)
    if not path.startswith("/"):
        raise ManifestError(f"{where}: {path!r} is not an absolute path")
    parts = path.split("/")[1:]
    if path != "/" and any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"{where}: {path!r} is not normalised (no '..', '.', '//' or trailing '/')")
    return path


def optional_name(value: object, where: str) -> str | None:
    """A name the host maps to a file or directory (never a host path: that would be measured)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ManifestError(
            f"{where}: must be a name of 1-64 letters, digits, '.', '_' or '-' "
            "(the host maps it to a file when it runs the enclave)"
        )
    return value


def file_name(value: object, where: str) -> str:
    name = text(value, where)
    if not name or "/" in name or name in (".", ".."):
        raise ManifestError(f"{where}: {name!r} is not a file name")
    return name


def hex_digest(value: object, where: str) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ManifestError(f"{where}: must be 64 lower-case hex digits")
    return bytes.fromhex(value)


def https_url(value: object, where: str) -> str:
    url = text(value, where)
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise ManifestError(f"{where}: contains white space or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ManifestError(f"{where}: {url!r} is not a URL: {e}") from None
    if parts.scheme != "https":
        raise ManifestError(f"{where}: {url!r} must be an https:// URL")
    if not parts.hostname:
        raise ManifestError(f"{where}: {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ManifestError(f"{where}: {url!r} must not carry credentials")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ManifestError(f"{where}: {url!r} must not have a query or fragment")
    if port == 0:
        raise ManifestError(f"{where}: {url!r} has port 0")
    return url


def spki_pem(data: bytes, where: str) -> str:
    """A public key, returned as SubjectPublicKeyInfo PEM. Only keys a KBS can use for TLS and JWS:
    RSA of at least 2048 bits, ECDSA on P-256/P-384/P-521, or Ed25519."""
    if b"PRIVATE KEY" in data:
        raise ManifestError(f"{where}: this is a private key; give the KBS's public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ManifestError(f"{where}: not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ManifestError(f"{where}: RSA key of {key.key_size} bits is too small (at least 2048)")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)):
            raise ManifestError(f"{where}: EC curve {key.curve.name} is not P-256, P-384 or P-521")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise ManifestError(f"{where}: unsupported key type (use RSA, ECDSA P-256/384/521 or Ed25519)")
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def read_limited(path: Path, limit: int, *, where: str = "", shown: str = "") -> bytes:
    """A regular file's bytes, refusing anything larger than ``limit`` before reading it."""
    prefix = f"{where}: " if where else ""
    shown = shown or str(path)
    try:
        # stat before open: opening a FIFO would block, and a directory has nothing to read.
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ManifestError(f"{prefix}{shown!r} is not a regular file")
        if st.st_size > limit:
            raise ManifestError(f"{prefix}{shown!r} is larger than {limit} bytes")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ManifestError(f"{prefix}cannot read {shown!r}: {e.strerror or e}") from None
    if len(data) > limit:
        raise ManifestError(f"{prefix}{shown!r} is larger than {limit} bytes")
    return data


_WASM_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\x00\x00\x00"  # WebAssembly core spec 2.0, binary format "Modules": version 1


def check_wasm_module(data: bytes, where: str, shown: str) -> None:
    """A core WebAssembly module that wasmtime accepts (not a component, not some other file)."""
    if data[:4] != _WASM_MAGIC:
        raise ManifestError(f"{where}: {shown!r} is not a WebAssembly module (no \\0asm magic)")
    if data[4:8] != _CORE_VERSION:
        # The component model keeps the magic and uses version 0x0d with layer 1.
        raise ManifestError(
            f"{where}: {shown!r} is not a core WebAssembly module (a component, or another version)"
        )
    import wasmtime

    try:
        wasmtime.Module.validate(wasmtime.Engine(), data)
    except wasmtime.WasmtimeError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "invalid"
        raise ManifestError(f"{where}: {shown!r} is not a valid WebAssembly module: {reason}") from None

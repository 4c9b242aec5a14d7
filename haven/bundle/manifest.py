"""The application manifest: what the owner declares about an application, and its measured form.

The owner writes TOML (schema in ``docs/manifest.md``). :func:`parse_manifest` checks every key and
value and resolves files (the module, the KBS public key) into content, so that the result depends
only on what the application is, never on where the owner keeps it. :meth:`Manifest.canonical_bytes`
is the form measured into the enclave; :meth:`Manifest.from_canonical` is the strict reader the
enclave uses, which accepts exactly the bytes ``canonical_bytes`` produces and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haven.bundle import _checks as c
from haven.bundle._checks import Table
from haven.errors import ManifestError

FORMAT = "haven-manifest/1"
MAX_MANIFEST_SIZE = 1 << 20
MAX_MODULE_SIZE = 256 << 20

_STDIN = ("none", "console")
_STDOUT = ("console", "none")
_TLS = ("ra-tls", "none")


@dataclass(frozen=True)
class ModuleRef:
    """The application module, named by content: file name (not path), SHA-256 and size."""

    name: str
    sha256: bytes
    size: int


@dataclass(frozen=True)
class Mount:
    """A guest directory backed by an encrypted image (``image``) or an untrusted host directory."""

    guest: str
    image: str | None
    host: str | None
    read_only: bool
    untrusted: bool

    @property
    def encrypted(self) -> bool:
        return self.image is not None


@dataclass(frozen=True)
class Listener:
    port: int
    tls: str


@dataclass(frozen=True)
class Kbs:
    """The owner's key broker: where to reach it and the public key (SPKI PEM) that identifies it."""

    url: str
    public_key: str


@dataclass(frozen=True)
class Manifest:
    """A validated manifest. Build one with :func:`parse_manifest` or :meth:`from_canonical`.

    ``env`` is sorted by name, ``mounts`` by guest path and ``listeners`` by port: their order in
    the TOML file is not part of the application's identity.
    """

    module: ModuleRef
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    stdin: str
    stdout: str
    stderr: str
    product_id: int
    svn: int
    debug: bool
    memory_limit: int  # bytes of guest linear memory
    time_limit: int  # seconds of wall-clock time; 0 = no limit
    mounts: tuple[Mount, ...]
    listeners: tuple[Listener, ...]
    kbs: Kbs | None

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "app": {
                "module": {
                    "name": self.module.name,
                    "sha256": self.module.sha256.hex(),
                    "size": self.module.size,
                },
                "argv": list(self.argv),
                "env": dict(self.env),
                "stdin": self.stdin,
                "stdout": self.stdout,
                "stderr": self.stderr,
            },
            "enclave": {
                "product_id": self.product_id,
                "svn": self.svn,
                "debug": self.debug,
                "memory_limit": self.memory_limit,
                "time_limit": self.time_limit,
            },
            "mount": [
                {
                    "guest": m.guest,
                    "image": m.image,
                    "host": m.host,
                    "read_only": m.read_only,
                    "untrusted": m.untrusted,
                }
                for m in self.mounts
            ],
            "listen": [{"port": lst.port, "tls": lst.tls} for lst in self.listeners],
            "kbs": None if self.kbs is None else {"url": self.kbs.url, "public_key": self.kbs.public_key},
        }

    def canonical_bytes(self) -> bytes:
        """UTF-8 JSON, keys sorted, no insignificant whitespace: the bytes measured into MRENCLAVE."""
        text = json.dumps(self.to_json_obj(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")

    def sha256(self) -> bytes:
        return hashlib.sha256(self.canonical_bytes()).digest()

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    @classmethod
    def from_canonical(cls, data: bytes) -> Manifest:
        """Read a canonical manifest; anything but the exact output of ``canonical_bytes`` is refused."""
        if not isinstance(data, (bytes, bytearray)):
            raise ManifestError("canonical manifest: needs bytes")
        if len(data) > MAX_MANIFEST_SIZE:
            raise ManifestError(f"canonical manifest: {len(data)} bytes, more than {MAX_MANIFEST_SIZE}")
        try:
            doc = json.loads(
                bytes(data).decode("utf-8"),
                object_pairs_hook=c.no_duplicate_keys,
                parse_float=c.refuse_float,
                parse_constant=c.refuse_float,
            )
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            raise ManifestError(f"canonical manifest: not canonical JSON: {e}") from None
        try:
            manifest = _read(doc, canonical=True, module=_canonical_module, kbs_key=_canonical_key)
        except ManifestError as e:
            raise ManifestError(f"canonical manifest: {e}") from None
        if manifest.canonical_bytes() != bytes(data):
            raise ManifestError(
                "canonical manifest: valid but not in canonical form (key order, spacing or values)"
            )
        return manifest


def load_manifest(path: Path) -> tuple[Manifest, bytes]:
    """Read and check a manifest file; relative paths in it are relative to its directory."""
    path = Path(path)
    try:
        raw = c.read_limited(path, MAX_MANIFEST_SIZE)
    except ManifestError as e:
        raise ManifestError(f"{path}: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    try:
        return parse_manifest(text, base_dir=path.parent)
    except ManifestError as e:
        raise ManifestError(f"{path}: {e}") from None


def parse_manifest(text: str, *, base_dir: Path) -> tuple[Manifest, bytes]:
    """Check a TOML manifest; returns it with the module's bytes (read from ``base_dir``)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"not valid TOML: {e}") from None
    loaded: list[bytes] = []

    def module(value: object, where: str) -> ModuleRef:
        ref, data = _load_module(value, where, Path(base_dir))
        loaded.append(data)
        return ref

    def kbs_key(value: object, where: str) -> str:
        return _load_kbs_key(value, where, Path(base_dir))

    manifest = _read(doc, canonical=False, module=module, kbs_key=kbs_key)
    return manifest, loaded[0]


# --- the one reader, for both shapes ---------------------------------------------------------------


def _read(
    doc: object,
    *,
    canonical: bool,
    module: Callable[[object, str], ModuleRef],
    kbs_key: Callable[[object, str], str],
) -> Manifest:
    """Both the TOML file and the canonical JSON go through here; ``canonical`` makes every key required
    (defaults are filled in) and takes sizes and durations as plain integers only."""
    top_keys = {"app", "enclave", "mount", "listen", "kbs"} | ({"format"} if canonical else set())
    top = Table(doc, "", top_keys, strict=canonical)
    if canonical and top.get("format") != FORMAT:
        raise ManifestError(f"format: expected {FORMAT!r}")

    app = top.table("app", {"module", "argv", "env", "stdin", "stdout", "stderr"}, required=True)
    assert app is not None
    mod = module(app.get("module"), app.path("module"))
    argv = tuple(c.text_list(app.get("argv", [mod.name]), app.path("argv"), minimum=1))
    env = c.env_table(app.get("env", {}), app.path("env"))
    stdin = c.choice(app.get("stdin", "none"), app.path("stdin"), _STDIN)
    stdout = c.choice(app.get("stdout", "console"), app.path("stdout"), _STDOUT)
    stderr = c.choice(app.get("stderr", "console"), app.path("stderr"), _STDOUT)

    enc = top.table(
        "enclave", {"product_id", "svn", "debug", "memory_limit", "time_limit"}, required=canonical
    )
    if enc is None:
        enc = Table({}, "enclave", set(), strict=False)
    product_id = c.integer(enc.get("product_id", 0), enc.path("product_id"), 0, 0xFFFF)
    svn = c.integer(enc.get("svn", 0), enc.path("svn"), 0, 0xFFFF)
    debug = c.boolean(enc.get("debug", False), enc.path("debug"))
    memory_limit = c.memory_size(
        enc.get("memory_limit", "512MiB"), enc.path("memory_limit"), text=not canonical
    )
    time_limit = c.duration(enc.get("time_limit", "0"), enc.path("time_limit"), text=not canonical)

    mounts = _read_mounts(top, canonical)
    listeners = _read_listeners(top, canonical)

    kbs: Kbs | None = None
    kbs_value = top.get("kbs", None)
    if kbs_value is not None:
        kt = Table(kbs_value, "kbs", {"url", "public_key"}, strict=True)
        kbs = Kbs(
            url=c.https_url(kt.get("url"), kt.path("url")),
            public_key=kbs_key(kt.get("public_key"), kt.path("public_key")),
        )

    return Manifest(
        module=mod,
        argv=argv,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        product_id=product_id,
        svn=svn,
        debug=debug,
        memory_limit=memory_limit,
        time_limit=time_limit,
        mounts=mounts,
        listeners=listeners,
        kbs=kbs,
    )


def _read_mounts(top: Table, canonical: bool) -> tuple[Mount, ...]:
    mounts: list[Mount] = []
    seen: dict[str, str] = {}
    for where, item in top.array_of_tables("mount"):
        t = Table(item, where, {"guest", "image", "host", "read_only", "untrusted"}, strict=canonical)
        guest = c.guest_path(t.get("guest"), t.path("guest"))
        image = c.optional_name(t.get("image", None), t.path("image"))
        host = c.optional_name(t.get("host", None), t.path("host"))
        read_only = c.boolean(t.get("read_only", False), t.path("read_only"))
        untrusted = c.boolean(t.get("untrusted", False), t.path("untrusted"))
        if (image is None) == (host is None):
            raise ManifestError(
                f"{where}: give exactly one of 'image' (encrypted) or 'host' (untrusted directory)"
            )
        if host is not None and not untrusted:
            raise ManifestError(
                f"{where}: a host directory is neither encrypted nor integrity-protected; "
                "mark it 'untrusted = true' or use an encrypted 'image'"
            )
        if image is not None and untrusted:
            raise ManifestError(f"{where}.untrusted: an encrypted image is not untrusted; remove this key")
        if guest in seen:
            raise ManifestError(f"{t.path('guest')}: {guest!r} is already mounted by {seen[guest]}")
        seen[guest] = where
        mounts.append(Mount(guest=guest, image=image, host=host, read_only=read_only, untrusted=untrusted))
    return tuple(sorted(mounts, key=lambda m: m.guest))


def _read_listeners(top: Table, canonical: bool) -> tuple[Listener, ...]:
    listeners: list[Listener] = []
    seen: dict[int, str] = {}
    for where, item in top.array_of_tables("listen"):
        t = Table(item, where, {"port", "tls"}, strict=canonical)
        port = c.integer(t.get("port"), t.path("port"), 1, 65535)
        tls = c.choice(t.get("tls", "ra-tls"), t.path("tls"), _TLS)
        if port in seen:
            raise ManifestError(f"{t.path('port')}: port {port} is already used by {seen[port]}")
        seen[port] = where
        listeners.append(Listener(port=port, tls=tls))
    return tuple(sorted(listeners, key=lambda x: x.port))


# --- the parts that differ between the two shapes --------------------------------------------------


def _load_module(value: object, where: str, base_dir: Path) -> tuple[ModuleRef, bytes]:
    rel = c.text(value, where)
    if not rel:
        raise ManifestError(f"{where}: empty path")
    path = base_dir / rel
    data = c.read_limited(path, MAX_MODULE_SIZE, where=where, shown=rel)
    c.check_wasm_module(data, where, rel)
    return ModuleRef(name=path.name, sha256=hashlib.sha256(data).digest(), size=len(data)), data


def _canonical_module(value: object, where: str) -> ModuleRef:
    t = Table(value, where, {"name", "sha256", "size"}, strict=True)
    name = c.file_name(t.get("name"), t.path("name"))
    digest = c.hex_digest(t.get("sha256"), t.path("sha256"))
    size = c.integer(t.get("size"), t.path("size"), 8, MAX_MODULE_SIZE)
    return ModuleRef(name=name, sha256=digest, size=size)


def _load_kbs_key(value: object, where: str, base_dir: Path) -> str:
    ref = c.text(value, where)
    if ref.lstrip().startswith("-----BEGIN"):
        return c.spki_pem(ref.encode("ascii", "replace"), where)
    if not ref:
        raise ManifestError(f"{where}: empty path")
    return c.spki_pem(c.read_limited(base_dir / ref, c.MAX_KEY_FILE, where=where, shown=ref), where)


def _canonical_key(value: object, where: str) -> str:
    return c.spki_pem(c.text(value, where).encode("ascii", "replace"), where)

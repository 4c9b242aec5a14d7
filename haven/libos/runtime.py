"""Booting an application inside an initialised enclave: manifest, module, mounts, and the run.

Everything the LibOS acts on comes from the enclave's own measured pages — the canonical manifest
and the module, found through the measured segment directory and checked against its hashes — never
from the host's bundle file. The host supplies only what the manifest leaves to it, by name: the
image file behind each encrypted mount, the directory behind each untrusted mount, the console and
the cache directory. Until the key broker releases image keys, the host passes them too (a
development stand-in: see ``docs/libos.md``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from haven.bundle import layout
from haven.bundle.manifest import Manifest, Mount
from haven.errors import BundleError, ManifestError
from haven.libos.clock import ShieldClock
from haven.libos.console import Console
from haven.libos.context import Preopen, WasiContext
from haven.libos.engine import EngineConfig, Instance, Launcher, Outcome, make_memory_image
from haven.libos.errors import MountError
from haven.libos.hostfs import HostDirBackend
from haven.libos.modcache import ModuleCache, Status, load_module, seal_key
from haven.libos.net import Listener, NetStack, QuoteRelay, preopen_listeners, ratls_identity_for
from haven.libos.netbackend import NetBackend, NetError
from haven.libos.vfs import Backend
from haven.tee.sgx.image import EnclaveImage
from haven.tee.sgx.structs import AttributeFlags

# How often the enclave asks the host for the wall time (ns); in between it counts forward on its own
# monotonic clock (haven.libos.clock). A quarter second keeps file times and `date` honest to the eye.
REALTIME_RESYNC_NS = 250_000_000


@dataclass(frozen=True)
class ImageSource:
    """The host's side of an encrypted mount: the block device, its freshness counter, and the key."""

    device: Any
    counter: Any
    key: bytes = field(repr=False)


@dataclass
class HostResources:
    """What the untrusted host provides, each by the name the manifest uses."""

    images: Mapping[str, ImageSource] = field(default_factory=dict)
    host_dirs: Mapping[str, Path] = field(default_factory=dict)
    console: Console | None = None
    cache_dir: Path | None = None
    # -- network: the relay for the manifest's listeners, and the quote relay for their RA-TLS identity
    net: NetBackend | None = None
    quotes: QuoteRelay | None = None
    # The wall clock (ns since the epoch): the host's ``clock_now`` in an enclave process.
    realtime: Callable[[], int] | None = None
    # Told of every failure that stops the guest inside a WASI call, before the guest unwinds (the
    # shield fails stop on a storage integrity failure here).
    on_fatal: Callable[[BaseException], object] | None = None


def measured_segment(image: EnclaveImage, name: str) -> tuple[bytes, bytes]:
    """A segment's exact bytes from the enclave's pages, checked against the measured directory's
    SHA-256; returns the bytes and that hash."""
    for seg in layout.directory_of(image):
        if seg.name == name and not seg.zero_fill:
            data = image.run(name).data[: seg.length]
            if not hmac.compare_digest(hashlib.sha256(data).digest(), seg.sha256):
                raise BundleError(f"segment {name!r} does not match its measured hash")
            return data, seg.sha256
    raise BundleError(f"the enclave has no {name!r} segment")


def enclave_application(image: EnclaveImage) -> tuple[Manifest, bytes]:
    """The canonical manifest and the module the enclave was measured with."""
    try:
        manifest = Manifest.from_canonical(measured_segment(image, layout.MANIFEST)[0])
    except ManifestError as e:
        raise BundleError(f"enclave manifest: {e}") from None
    module, digest = measured_segment(image, layout.MODULE)
    ref = manifest.module
    if len(module) != ref.size or not hmac.compare_digest(digest, ref.sha256):
        raise BundleError("the module segment is not the module the manifest names")
    return manifest, module


def _mount(m: Mount, resources: HostResources, clock: ShieldClock, device: int) -> Backend:
    if m.image is not None:
        source = resources.images.get(m.image)
        if source is None:
            raise MountError(
                f"the manifest mounts image {m.image!r} at {m.guest}, but the host gave no image for it"
            )
        from haven.libos.encfs import EncryptedFsBackend

        return EncryptedFsBackend.mount(source, read_only=m.read_only, device=device, clock=clock.realtime)
    assert m.host is not None and m.untrusted  # the manifest reader guarantees both
    path = resources.host_dirs.get(m.host)
    if path is None:
        raise MountError(
            f"the manifest mounts host directory {m.host!r} at {m.guest}, but the host gave none"
        )
    if not Path(path).is_dir():
        raise MountError(f"host directory {m.host!r} ({path}) is not a directory")
    return HostDirBackend(Path(path), read_only=m.read_only, device=device)


class Application:
    """An application booted in an enclave: mounts set up, ready to run once."""

    def __init__(self, enclave: Any, resources: HostResources) -> None:
        self.enclave = enclave
        self.manifest, self.module = enclave_application(enclave.image)
        self.debug = bool(enclave.secs.attributes.flags & AttributeFlags.DEBUG)
        self.resources = resources
        self.clock = (
            ShieldClock(resources.realtime, resync_ns=REALTIME_RESYNC_NS)
            if resources.realtime is not None
            else ShieldClock()
        )
        self._compiled: tuple[wasmtime.Engine, wasmtime.Module, EngineConfig] | None = None
        self.cache_status: Status | None = None
        self.warnings: list[str] = []
        if self.debug:
            self.warnings.append(
                "this is a debug enclave: a debugger can read its memory, and no production policy "
                "releases secrets to it"
            )
        self.backends: list[Backend] = []
        preopens: list[Preopen] = []
        try:
            for i, m in enumerate(self.manifest.mounts):
                backend = _mount(m, resources, self.clock, i + 1)
                self.backends.append(backend)
                preopens.append(Preopen(m.guest, backend))
                if m.host is not None:
                    self.warnings.append(
                        f"{m.guest} is the host directory {m.host!r}: untrusted, neither encrypted nor "
                        "integrity-protected"
                    )
            self._listen()
        except BaseException:
            self.close()
            raise
        self.preopens = preopens

    # -- network ------------------------------------------------------------------------------------
    # The manifest's listeners listen at boot, and the RA-TLS identity (key, quotes, TLS context) is
    # made then too: before the enclave process is confined. They become descriptors after the
    # preopened directories (wasi-libc stops its preopen scan at the first descriptor that is not one).

    net: NetStack | None = None
    listeners: tuple[Listener, ...] = ()

    def _listen(self) -> None:
        wanted = self.manifest.listeners
        if not wanted:
            return
        backend = self.resources.net
        if backend is None:
            raise NetError("the manifest has listeners, but the host gave no network")
        identity = None
        if any(lst.tls == "ra-tls" for lst in wanted):
            relay = self.resources.quotes
            if relay is None:
                raise NetError("the manifest has an RA-TLS listener, but the host relays no quotes")
            identity = ratls_identity_for(self.enclave, relay.quote, relay.target)
        self.net = NetStack(backend, identity)
        self.listeners = tuple(self.net.listen(lst.port, lst.tls) for lst in wanted)
        for lst in wanted:
            if lst.tls == "none":
                self.warnings.append(f"port {lst.port} is a plaintext listener: the host reads its traffic")

    def _close_net(self) -> None:
        net, self.net = self.net, None
        if net is not None:
            net.close_all()

    # -- end of network ------------------------------------------------------------------------------

    def prepare(self, *, before_confinement: bool = False) -> None:
        """Compile the module, or load it from the sealed cache (which reads and writes the cache
        directory: an enclave process does this before it is confined, and then also has wasmtime
        build the module's memory image, which it could not do confined)."""
        if self._compiled is not None:
            return
        config = EngineConfig(epoch_interruption=self.manifest.time_limit > 0)
        engine = config.engine()
        cache = None
        if self.resources.cache_dir is not None:
            cache = ModuleCache(self.resources.cache_dir, seal_key(self.enclave))
        module, self.cache_status = load_module(
            engine, self.module, config.digest(), cache, self.manifest.module.sha256
        )
        if before_confinement:
            make_memory_image(engine, module)
        self._compiled = engine, module, config

    def run(self, launcher_for: Callable[[wasmtime.Module], Launcher | None] | None = None) -> Outcome:
        """Run once: the command's ``_start``, or a reactor through the launcher ``launcher_for``
        makes for the compiled module (given the manifest's argv)."""
        m = self.manifest
        self.prepare()
        assert self._compiled is not None
        engine, module, _ = self._compiled
        launcher = launcher_for(module) if launcher_for is not None else None
        console = self.resources.console or Console.for_manifest(m.stdin, m.stdout, m.stderr)
        ctx = WasiContext(args=m.argv, env=m.env, console=console, preopens=self.preopens, clock=self.clock)
        if self.net is not None:
            preopen_listeners(ctx.fds, self.net, self.listeners, ctx.remaining)
        try:
            instance = _Instance(
                self.resources.on_fatal,
                engine, module, ctx, memory_limit=m.memory_limit, time_limit=m.time_limit, launcher=launcher
            )
            return instance.run(list(m.argv))
        finally:
            ctx.close_all()
            self._close_net()

    def close(self) -> None:
        """Commit and close every mount (an encrypted image commits here, as on fsync)."""
        self._close_net()
        backends, self.backends = self.backends, []
        errors: list[BaseException] = []
        for b in reversed(backends):
            try:
                b.close()
            except BaseException as e:
                errors.append(e)
        if errors:
            raise errors[0]


class _Instance(Instance):
    """An instance that tells ``on_fatal`` of a failure before the guest unwinds from it."""

    def __init__(self, on_fatal: Callable[[BaseException], object] | None, *args: Any, **kw: Any) -> None:
        self._on_fatal = on_fatal
        super().__init__(*args, **kw)

    def _fatal(self, name: str, exc: BaseException) -> int:
        if self._on_fatal is not None:
            self._on_fatal(exc)
        return super()._fatal(name, exc)

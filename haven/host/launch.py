"""The untrusted runtime of ``haven run``: serve a bundle's enclave process from this machine.

The host opens what it lends the enclave — each image file as a block device, its counter file —
and serves them, the console, the wall clock and the quoting enclave through a
:class:`~haven.host.backend.LocalBackend`; it starts the enclave process with the entry
:func:`haven.host.loader.entry`, which boots the bundle and runs it confined. The host never sees an
image key in use: it only passes the key file's name (the development stand-in until the key broker
releases image keys), which the enclave process reads during its boot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import haven
from haven.host.backend import LocalBackend
from haven.host.dispatcher import HostBackend
from haven.host.runtime import python_path_with, run_enclave
from haven.shield.storage.counter import FileCounter, FreshnessCounter
from haven.shield.storage.device import BlockDevice, FileBlockDevice

BOOT_ENTRY = "haven.host.loader:entry"


@dataclass(frozen=True)
class HostImage:
    """An encrypted mount's files on this machine: the image, its counter, and its key file."""

    image: Path
    counter: Path
    key_file: Path


def _quoting(platform: Path | None) -> Callable[[], Any]:
    def open_qe() -> Any:
        from haven.tee.sim.platform import SimPlatform
        from haven.tee.sim.qe import QuotingEnclave

        return QuotingEnclave(SimPlatform.open(platform))

    return open_qe


def run_bundle(
    bundle: Path,
    images: Mapping[str, HostImage] | None = None,
    *,
    platform: Path | None = None,
    cache_dir: Path | None = None,
    confine: bool = True,
    wrap: Callable[[HostBackend], HostBackend] | None = None,
    console: tuple[int | None, int | None, int | None] = (0, 1, 2),
    stderr: int | None = None,
    timeout: float | None = None,
    grace: float | None = None,
) -> int:
    """Run the bundle at ``bundle`` in a new enclave process (confined unless ``confine`` is False);
    its exit code. ``wrap`` puts a backend around the honest one (the tests' adversary)."""
    devices: list[FileBlockDevice] = []
    counters: list[FreshnessCounter | None] = []
    args = [str(bundle)]
    if platform is not None:
        args += ["--platform", str(platform)]
    if cache_dir is not None:
        args += ["--cache-dir", str(cache_dir)]
    backend = LocalBackend(devices=devices, counters=counters, console=console, quoting=_quoting(platform))
    try:
        for name, files in (images or {}).items():
            args += ["--image", f"{name}={len(devices)}:{files.key_file}"]
            devices.append(FileBlockDevice.open(files.image))
            counters.append(FileCounter(files.counter))
        backend.devices, backend.counters = list[BlockDevice](devices), counters
        served = wrap(backend) if wrap is not None else backend
        return run_enclave(
            BOOT_ENTRY,
            args,
            served,
            confine=confine,
            grace=grace,
            timeout=timeout,
            env=python_path_with(Path(haven.__file__).resolve().parents[1]),
            stderr=stderr,
        )
    finally:
        backend.close()
        for device in devices:
            device.close()

"""The enclave process's loader: EINIT the bundle on the simulated platform, then boot the shield.

The loader is the untrusted part of starting an enclave (on SGX hardware, the driver's ECREATE,
EADD, EEXTEND and EINIT): it runs in the enclave process only because the simulated CPU lives in
that process. Whatever bundle bytes it reads, EINIT checks them against the SIGSTRUCT, so it needs
no trust; the shield (:func:`haven.shield.boot.boot`) takes over from the initialised enclave.
"""

from __future__ import annotations

from collections.abc import Callable

from haven.bundle.container import read_bundle
from haven.shield.boot import boot, parse_args
from haven.shield.hostchannel import HostChannel
from haven.tee.sim.platform import SimPlatform


def entry(host: HostChannel, args: list[str]) -> Callable[[], int]:
    """``enclave_main``'s entry for ``haven run``: ``BUNDLE [--platform FILE] [--image ...]
    [--cache-dir DIR]``."""
    ns = parse_args(args)
    bundle = read_bundle(ns.bundle)
    enclave = SimPlatform.open(ns.platform).load_enclave(bundle.image, bundle.sigstruct)
    return boot(host, enclave, ns)

"""An enclave image: the pages a loader adds to an enclave, and the SECS parameters it creates it with.

The image is what the (untrusted) loader proposes; its measurement is what the processor computes
from it. EINIT compares that measurement with the signer's SIGSTRUCT.ENCLAVEHASH, so a loader that
changes any measured byte, page type, permission or offset is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from haven.errors import FormatError
from haven.tee.sgx.measure import Measurement
from haven.tee.sgx.structs import PAGE_SIZE, Secinfo


@dataclass(frozen=True)
class PageRun:
    """Contiguous pages added with one SECINFO; ``data`` is a whole number of pages."""

    offset: int
    data: bytes
    secinfo: Secinfo
    measured: bool = True
    name: str = ""

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


@dataclass(frozen=True)
class EnclaveImage:
    """SECS.SIZE, SECS.SSAFRAMESIZE and the page runs, in the order they are added."""

    size: int
    ssaframesize: int
    runs: tuple[PageRun, ...]

    def __post_init__(self) -> None:
        at = 0
        for run in self.runs:
            if run.offset % PAGE_SIZE or len(run.data) % PAGE_SIZE or not run.data:
                raise FormatError(f"page run {run.name or hex(run.offset)} is not page-aligned")
            if run.offset < at:
                raise FormatError(f"page run {run.name or hex(run.offset)} overlaps the one before")
            at = run.end
        if at > self.size:
            raise FormatError(f"pages end at {at:#x}, beyond the enclave size {self.size:#x}")

    def mrenclave(self) -> bytes:
        m = Measurement(self.size, self.ssaframesize)
        for run in self.runs:
            m.add_pages(run.offset, run.data, run.secinfo, measured=run.measured)
        return m.digest()

    def run(self, name: str) -> PageRun:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)


def enclave_size_for(end: int) -> int:
    """The smallest power-of-two ELRANGE that holds ``end`` bytes (ECREATE requires a power of two)."""
    size = PAGE_SIZE
    while size < end:
        size <<= 1
    return size


def pad_to_pages(data: bytes) -> bytes:
    return data + bytes(-len(data) % PAGE_SIZE)

"""Sealed blocks on their way to the device: gathered into physically contiguous runs, so a long write
costs few device calls, and written on a second thread while the next run is being sealed.

Ciphertext is sealed straight into the run buffer (AES-GCM's ``encrypt_into``), so the only copy of
the data between the caller's buffer and the device is the encryption itself. A full run is handed to
the writer thread and sealing continues into the other buffer; the ordering rules of the commit
protocol are kept by :meth:`WriteBehind.drain`, which every other device call waits for (reads of a
block still in a buffer, the flush, a superblock). Devices that cannot take a call from a second
thread (the host channel carries every host call on one connection) are written on the calling
thread instead.

A failed background write is not retried: the blocks it carried are lost, so the store that owns this
must stop (:class:`WriteFailed`, raised at the next drain and at every call after it).
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor

from haven.shield.storage.device import BlockDevice
from haven.shield.storage.errors import StorageError
from haven.shield.storage.layout import TAG_SIZE

# A run handed to the writer thread, in blocks: large enough that the call overhead vanishes, small
# enough that two buffers stay a few MiB of enclave memory.
RUN_BLOCKS = 1024
# A run shorter than this is written on the calling thread at drain time: for a small commit a thread
# hand-off costs more than the write.
_SYNC_BELOW = 64


class WriteFailed(StorageError):
    """A write handed to the device failed; what it carried is not on the device."""


class WriteBehind:
    def __init__(self, dev: BlockDevice, block_size: int, *, threaded: bool | None = None) -> None:
        self._dev = dev
        self._bs = block_size
        if threaded is None:
            threaded = bool(getattr(dev, "concurrent", False))
        self._threaded = threaded
        self._pool: ThreadPoolExecutor | None = None
        self._buffers: list[bytearray] = []
        self._cur = 0  # index of the buffer being filled
        self._start = 0  # first physical block of the run being filled
        self._count = 0  # blocks in it
        self._inflight: Future[None] | None = None
        self._failed: str | None = None

    def slot(self, phys: int, blocks: int) -> memoryview:
        """Room for ``blocks`` sealed blocks bound for physical block ``phys`` onwards, plus the
        ``TAG_SIZE`` bytes AES-GCM appends (the next slot's ciphertext overwrites them: take the
        tag before asking for another slot)."""
        if self._failed is not None:
            raise WriteFailed(self._failed)
        if blocks > RUN_BLOCKS:
            raise StorageError(f"internal: a sealed run of {blocks} blocks is longer than a buffer")
        if self._count and (phys != self._start + self._count or self._count + blocks > RUN_BLOCKS):
            self._hand_off()
        if not self._count:
            self._start = phys
        buf = self._buffer()
        at = self._count * self._bs
        self._count += blocks
        return memoryview(buf)[at : at + blocks * self._bs + TAG_SIZE]

    def pending(self) -> bool:
        return bool(self._count) or self._inflight is not None

    def drain(self) -> None:
        """Every block handed to :meth:`slot` is written (not yet flushed) when this returns."""
        if self._failed is not None:
            raise WriteFailed(self._failed)
        self._wait()
        if self._count:
            run, self._count = memoryview(self._buffer())[: self._count * self._bs], 0
            self._write(self._start, run)

    def close(self) -> None:
        """Drop whatever was not written (the store is closing or stopped) and end the thread."""
        self._count = 0
        if self._inflight is not None:
            # The store is going away: whether that last write landed no longer matters.
            with contextlib.suppress(BaseException):
                self._inflight.result()
            self._inflight = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._buffers.clear()

    def _buffer(self) -> bytearray:
        while len(self._buffers) <= self._cur:
            # Kept for the store's life: fresh memory for every run would cost a page fault a page.
            self._buffers.append(bytearray(RUN_BLOCKS * self._bs + TAG_SIZE))
        return self._buffers[self._cur]

    def _hand_off(self) -> None:
        """Start writing the run being filled and continue in the other buffer."""
        self._wait()
        run = memoryview(self._buffer())[: self._count * self._bs]
        start, self._count = self._start, 0
        if not self._threaded or len(run) // self._bs < _SYNC_BELOW:
            self._write(start, run)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="haven-writeback")
        self._inflight = self._pool.submit(self._dev.write, start, run)
        self._cur ^= 1

    def _wait(self) -> None:
        future, self._inflight = self._inflight, None
        if future is None:
            return
        try:
            future.result()
        except StorageError as e:
            self._failed = f"a background write failed: {e}"
            raise WriteFailed(self._failed) from None
        except OSError as e:
            self._failed = f"a background write failed: {e.strerror or e}"
            raise WriteFailed(self._failed) from None

    def _write(self, start: int, run: memoryview) -> None:
        try:
            self._dev.write(start, run)
        except StorageError as e:
            self._failed = f"a write failed: {e}"
            raise WriteFailed(self._failed) from None

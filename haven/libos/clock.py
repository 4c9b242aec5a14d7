"""The clocks the guest sees: realtime and monotonic that never go backwards, and CPU time.

The wall time comes from the host (DESIGN.md, host interface ``clock_now``), which may lie: the
shield keeps a floor under each clock, so whatever the host answers, the guest never sees time run
backwards. CPU time is the enclave thread's own and cannot be influenced by the host's answers.

Asking the host costs a crossing (tens of microseconds when the host process must be woken), and
applications read the wall clock constantly (SQLite for every statement). So when ``resync_ns`` is
set, the shield asks the host at most once per that interval and carries the wall time forward with
its own monotonic clock in between — the host's answer is only ever a correction, under the floor.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ShieldClock:
    """Monotonic floors over an untrusted time source (``time.time_ns`` and ``time.monotonic_ns``)."""

    __slots__ = ("_base_mono", "_base_real", "_real", "_real_floor", "_resync", "mono_floor", "mono_source")

    def __init__(
        self,
        realtime: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], int] = time.monotonic_ns,
        *,
        resync_ns: int = 0,
    ) -> None:
        self._real = realtime
        self.mono_source = monotonic
        self._real_floor = 0
        self.mono_floor = 0  # public: clock_time_get applies it inline on its hot path
        self._resync = resync_ns
        self._base_real = 0
        self._base_mono: int | None = None

    def _wall(self) -> int:
        if not self._resync:
            return self._real()
        mono = self.mono_source()
        if self._base_mono is None or not 0 <= mono - self._base_mono < self._resync:
            self._base_real, self._base_mono = self._real(), mono
            return self._base_real
        return self._base_real + (mono - self._base_mono)

    def realtime(self) -> int:
        """Nanoseconds since 1970-01-01T00:00:00Z, never less than a value already returned."""
        now = self._wall()
        if now < self._real_floor:
            return self._real_floor
        self._real_floor = now
        return now

    def monotonic(self) -> int:
        now = self.mono_source()
        if now < self.mono_floor:
            return self.mono_floor
        self.mono_floor = now
        return now

    @staticmethod
    def process_cputime() -> int:
        return time.process_time_ns()

    @staticmethod
    def thread_cputime() -> int:
        return time.thread_time_ns()

    @staticmethod
    def resolution(clock_id: int) -> int:
        """Nanoseconds; WASI requires a non-zero resolution for every supported clock."""
        ids = (
            time.CLOCK_REALTIME,
            time.CLOCK_MONOTONIC,
            time.CLOCK_PROCESS_CPUTIME_ID,
            time.CLOCK_THREAD_CPUTIME_ID,
        )
        try:
            res = time.clock_getres(ids[clock_id])
        except (OSError, IndexError):
            res = 1e-9
        return max(1, round(res * 1e9))

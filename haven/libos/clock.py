"""The clocks the guest sees: realtime and monotonic that never go backwards, and CPU time.

The wall time comes from the host (DESIGN.md, host interface ``clock_now``), which may lie: the
shield keeps a floor under each clock, so whatever the host answers, the guest never sees time run
backwards. CPU time is the enclave thread's own and cannot be influenced by the host's answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ShieldClock:
    """Monotonic floors over an untrusted time source (``time.time_ns`` and ``time.monotonic_ns``)."""

    __slots__ = ("_real", "_real_floor", "mono_floor", "mono_source")

    def __init__(
        self,
        realtime: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._real = realtime
        self.mono_source = monotonic
        self._real_floor = 0
        self.mono_floor = 0  # public: clock_time_get applies it inline on its hot path

    def realtime(self) -> int:
        """Nanoseconds since 1970-01-01T00:00:00Z, never less than a value already returned."""
        now = self._real()
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

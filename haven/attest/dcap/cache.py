"""A small thread-safe LRU map: the DCAP verifier's caches are keyed by content hashes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_CACHES: list[Lru[object, object]] = []


class Lru(Generic[K, V]):
    """At most ``size`` entries; the least recently used goes first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        _CACHES.append(self)  # type: ignore[arg-type]

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def clear_caches() -> None:
    """Forget every cached parse and verification (benchmarks use it to measure the uncached path)."""
    for cache in _CACHES:
        cache.clear()

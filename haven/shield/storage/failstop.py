"""Fail stop: once an integrity check fails, or a write to the device fails part way, a store refuses
every further call with the first failure's message. It never retries into a state the host chose, and
never answers from memory it can no longer vouch for; a remount starts again from the last whole
commit (docs/storage-format.md, "Failing stop")."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

from haven.shield.storage.errors import IntegrityError, StorageError
from haven.shield.storage.writeback import WriteFailed

_P = ParamSpec("_P")
_R = TypeVar("_R")


class FailStop:
    _stopped: tuple[type[StorageError], str] | None = None  # (error class, message) once stopped

    def _guard(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run ``fn``; an integrity failure stops the store for good (fail stop)."""
        try:
            return fn(*args, **kwargs)
        except IntegrityError as e:
            self._stop(IntegrityError, f"the store stopped after an integrity failure: {e}")
            raise
        except WriteFailed as e:  # a read waited for a background write, which failed
            self._stop(StorageError, f"the store stopped after a failed write: {e}")
            raise

    def _guard_write(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run ``fn``, which changes the device. Any failure leaves the in-memory state unknown, so it
        stops the store for good; the last commit on the device is whole, and a remount recovers it."""
        try:
            return fn(*args, **kwargs)
        except IntegrityError as e:
            self._stop(IntegrityError, f"the store stopped after an integrity failure: {e}")
            raise
        except BaseException as e:
            self._stop(StorageError, f"the store stopped after a failed write: {e}")
            raise

    def _stop(self, cls: type[StorageError], message: str) -> None:
        if self._stopped is None:
            self._stopped = (cls, message)

    def _refuse(self) -> NoReturn:
        assert self._stopped is not None
        cls, message = self._stopped
        raise cls(message)

"""The physical block map: which blocks are free, and the copy-on-write rule that keeps the last
commit whole.

Kept in memory only (rebuilt by walking the tree at mount), one byte per block:

* FREE: may be written now;
* LIVE: referenced by the last commit, never overwritten;
* NEW: written since the last commit (referenced only by the commit being built);
* DYING: referenced by the last commit but not by the one being built; it stays untouchable until
  that commit is durable, because a crash before then recovers the last commit, which needs it.
"""

from __future__ import annotations

from haven.shield.storage.errors import IntegrityError, NoSpaceError
from haven.shield.storage.layout import FIRST_FREE_BLOCK

FREE, LIVE, NEW, DYING = 0, 1, 2, 3
_COMMITTED_VIEW = bytes([FREE, LIVE, FREE, LIVE]) + bytes(252)


class PhysMap:
    def __init__(self, n_blocks: int) -> None:
        self.n_blocks = n_blocks
        self._state = bytearray(n_blocks)
        self._state[:FIRST_FREE_BLOCK] = bytes([LIVE]) * FIRST_FREE_BLOCK
        self.free = n_blocks - FIRST_FREE_BLOCK
        self.live = 0  # blocks the last commit references (LIVE + DYING), superblocks excluded
        self._new: set[int] = set()
        self._dying: list[int] = []
        self._cursor = FIRST_FREE_BLOCK

    def mark_live(self, phys: int, what: str) -> None:
        """Record a block the committed tree references (while walking it at mount)."""
        if not FIRST_FREE_BLOCK <= phys < self.n_blocks:
            raise IntegrityError(f"{what} points outside the device (block {phys})")
        if self._state[phys] != FREE:
            raise IntegrityError(f"{what}: physical block {phys} is referenced twice")
        self._state[phys] = LIVE
        self.free -= 1
        self.live += 1

    def mark_live_run(self, phys: int, n: int, what: str) -> None:
        """``mark_live`` for ``n`` consecutive blocks (a data segment)."""
        if not (FIRST_FREE_BLOCK <= phys and phys + n <= self.n_blocks):
            raise IntegrityError(f"{what} points outside the device (blocks {phys}..{phys + n - 1})")
        if self._state.count(FREE, phys, phys + n) != n:
            raise IntegrityError(f"{what}: physical blocks {phys}..{phys + n - 1} are referenced twice")
        self._state[phys : phys + n] = bytes([LIVE]) * n
        self.free -= n
        self.live += n

    def state(self, phys: int) -> int:
        return self._state[phys]

    def alloc_run(self, n: int) -> int | None:
        """First block of ``n`` contiguous free blocks (next fit from the last allocation), or None."""
        if n > self.free:
            return None
        pattern = bytes(n)
        at = self._state.find(pattern, self._cursor)
        if at < 0:
            at = self._state.find(pattern, FIRST_FREE_BLOCK)
            if at < 0:
                return None
        self._state[at : at + n] = bytes([NEW]) * n
        self._new.update(range(at, at + n))
        self.free -= n
        self._cursor = at + n
        return at

    def alloc(self, n: int) -> list[tuple[int, int]]:
        """``n`` blocks as (start, length) runs, as contiguous as the free space allows."""
        if n > self.free:
            raise NoSpaceError(f"the image is full: {n} blocks needed, {self.free} free")
        runs: list[tuple[int, int]] = []
        want = n
        while want:
            size = want
            while (at := self.alloc_run(size)) is None:
                if size == 1:
                    raise IntegrityError("the free block map disagrees with its count")
                size //= 2
            runs.append((at, size))
            want -= size
        return runs

    def release(self, phys: int) -> None:
        """The block is no longer referenced by the commit being built."""
        state = self._state[phys]
        if state == LIVE:
            self._state[phys] = DYING
            self._dying.append(phys)
        elif state == NEW:  # written and superseded within one commit: nothing durable needs it
            self._state[phys] = FREE
            self._new.discard(phys)
            self.free += 1
        else:
            raise IntegrityError(f"physical block {phys} released twice")

    def committed(self) -> None:
        """The commit being built is durable: its new blocks are live and the dying ones free."""
        state = self._state
        for phys in self._new:
            state[phys] = LIVE
        self.live += len(self._new)
        for phys in self._dying:
            state[phys] = FREE
        self.free += len(self._dying)
        self.live -= len(self._dying)
        self._new.clear()
        self._dying.clear()

    def live_after_commit(self) -> int:
        """What ``live`` will be once the commit being built is durable."""
        return self.live - len(self._dying) + len(self._new)

    def committed_view(self) -> bytes:
        """One byte per block: LIVE where the last commit references it, FREE elsewhere."""
        return bytes(self._state.translate(_COMMITTED_VIEW))

    def pending(self) -> int:
        """Blocks written since the last commit and still needed by the commit being built."""
        return len(self._new)

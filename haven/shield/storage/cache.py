"""The enclave's block cache: verified, decrypted blocks, least recently used first out.

Everything in it was authenticated against the committed tree (or written by this store), so a hit
costs no decryption and no check. Keys are logical block numbers for data and negative numbers for
tree nodes (:func:`~haven.shield.storage.tree.node_key`).
"""

from __future__ import annotations

from collections import OrderedDict


class BlockCache:
    def __init__(self, max_blocks: int) -> None:
        self.max_blocks = max(16, max_blocks)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def get(self, key: int) -> bytes | None:
        block = self._blocks.get(key)
        if block is not None:
            self._blocks.move_to_end(key)
        return block

    def put(self, key: int, block: bytes) -> None:
        blocks = self._blocks
        blocks[key] = block
        blocks.move_to_end(key)
        if len(blocks) > self.max_blocks:
            blocks.popitem(last=False)

    def pop(self, key: int) -> None:
        self._blocks.pop(key, None)

    def discard_run(self, first: int, n: int) -> None:
        """Forget data blocks ``first .. first + n - 1``."""
        pop = self._blocks.pop
        for key in range(first, first + n):
            pop(key, None)

    def clear(self) -> None:
        self._blocks.clear()

    def __len__(self) -> int:
        return len(self._blocks)

"""Private storage: encrypted, integrity- and freshness-protected disk images.

The block layer (:mod:`.device`, :mod:`.counter`, :mod:`.keys`, :mod:`.store`) turns an untrusted
file of fixed-size blocks into a store of logical blocks that are encrypted with AES-256-GCM, covered
by a Merkle tree of MACs, committed copy-on-write under two alternating superblocks, and protected
from rollback by a freshness counter. The file system (:mod:`.fs`) lives on top of it.
The on-disk format is documented in ``docs/storage-format.md``.
"""

"""Crash consistency: a writer killed with SIGKILL at random instants never leaves a broken image.

After every kill the image mounts, ``check`` passes, and the tree is exactly the last state the writer
recorded as synced, or the state of the sync it was inside (see ``tests/crash_support.py``). The default
run does a few kills; ``pytest -m soak`` does at least 200 (on two images side by side).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from haven.shield.storage.image import open_image
from haven.shield.storage.keys import load_image_key
from tests.crash_support import (
    CrashCheckFailed,
    CrashImage,
    _candidates,
    _journal,
    run_round,
    soak,
    summary,
    verify,
)

SOAK_KILLS = int(os.environ.get("HAVEN_CRASH_KILLS", "200"))


def test_a_few_kills(tmp_path: Path) -> None:
    img = CrashImage.make(tmp_path)
    rng = random.Random(20140901)
    results = [run_round(img, rng) for _ in range(10)]
    assert sum(r.killed for r in results) >= 8  # the writer runs far longer than the longest delay
    assert sum(r.syncs_done for r in results) > 0


@pytest.mark.soak
def test_soak_of_at_least_200_kills(tmp_path: Path) -> None:
    assert SOAK_KILLS >= 200
    start = time.monotonic()
    results = soak(tmp_path, SOAK_KILLS, seed=int(time.time()))
    print(summary(results, time.monotonic() - start))
    assert len(results) >= 200
    assert sum(r.killed for r in results) >= 0.9 * len(results)
    assert any(r.mid_sync for r in results)


# ------------------------------------------------------------------ the harness itself can fail


def _records(path: Path, *records: dict[str, object], torn: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + torn)


def test_the_journal_rule(tmp_path: Path) -> None:
    j = tmp_path / "j"
    s1, s2, s3 = {"/a": "dir"}, {"/a": "dir", "/b": "link:x"}, {"/c": "dir"}
    _records(
        j,
        {"seq": 1, "phase": "pending", "state": s1},
        {"seq": 1, "phase": "done"},
        {"seq": 2, "phase": "pending", "state": s2},
        torn=b'{"seq": 2, "pha',
    )
    assert _candidates(_journal(j), s3) == ([s1, s2], 1)  # the torn line was never written
    _records(j, {"seq": 1, "phase": "pending", "state": s1})
    assert _candidates(_journal(j), s3) == ([s3, s1], 0)  # killed inside the first sync
    j.unlink()
    assert _candidates(_journal(j), s3) == ([s3], 0)  # killed before the journal existed
    _records(j, {"seq": 1, "phase": "done"})
    with pytest.raises(CrashCheckFailed, match="without its pending record"):
        _candidates(_journal(j), s3)


def test_verify_catches_a_state_that_was_never_synced(tmp_path: Path) -> None:
    img = CrashImage.make(tmp_path / "w")
    run_round(img, random.Random(1))
    key = load_image_key(img.keyfile)
    with open_image(img.image, key, img.counter) as fs:  # a change no journal records
        fs.mkdir(fs.root, b"unrecorded")
    with pytest.raises(
        CrashCheckFailed, match=r"neither the last synced state \(missing \[\], unexpected \['/unrecorded'\]"
    ):
        verify(img, tmp_path / "no-journal", "test")


def test_verify_catches_a_damaged_image(tmp_path: Path) -> None:
    img = CrashImage.make(tmp_path / "w")
    run_round(img, random.Random(2))
    with img.image.open("r+b") as f:
        f.seek(0)
        f.write(b"\xff")  # slot A's magic; slot B may still mount, so damage both
        f.seek(4096)
        f.write(b"\xff")
    with pytest.raises(CrashCheckFailed, match="test: "):
        verify(img, tmp_path / "no-journal", "test")

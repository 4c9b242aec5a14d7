"""Nothing readable leaks into an image file: a canary written as names, contents, link targets and
directory names is nowhere in the image, not even a 16-byte run of it, at any offset."""

from __future__ import annotations

import os
from pathlib import Path

from haven.shield.storage.image import create_image, open_image, write_key_file
from haven.shield.storage.keys import load_image_key

# 64 bytes that occur nowhere by chance; every 16-byte run of it is distinct.
CANARY = b"HavenCanary:7b1e9d4f-2c68-4a03-b5e7-91fd0c3a62d8;leak-if-seen!!#"
RUN = 16
assert len(CANARY) == 64


def canary_runs(data: bytes, canary: bytes = CANARY, run: int = RUN) -> list[tuple[int, int]]:
    """Every (offset in data, offset in canary) where a ``run``-byte piece of the canary occurs.

    ``bytes.find`` tries every offset of ``data``; each of the ``len(canary) - run + 1`` pieces is
    searched for separately, so a piece cut off by a block boundary elsewhere is still found.
    """
    hits = []
    for start in range(len(canary) - run + 1):
        piece = canary[start : start + run]
        at = data.find(piece)
        while at != -1:
            hits.append((at, start))
            at = data.find(piece, at + 1)
    return hits


def _name(tag: str) -> str:
    return f"{tag}-{CANARY.decode()}"


def _write_tree(src: Path) -> dict[str, bytes]:
    """A host tree full of the canary; returns the files' expected contents by image path."""
    expected: dict[str, bytes] = {}
    (src / _name("dir")).mkdir()
    (src / _name("dir") / _name("nested")).mkdir()
    bodies = {
        _name("tiny"): CANARY,
        f"{_name('dir')}/{_name('small')}": b"x" * 7 + CANARY * 3 + b"y" * 5,
        f"{_name('dir')}/{_name('nested')}/{_name('big')}": (CANARY * 40_000)[:2_500_001],
        # the canary straddling a block boundary
        _name("straddle"): b"\0" * (4096 - 30) + CANARY + b"\0" * 100,
    }
    for rel, data in bodies.items():
        (src / rel).write_bytes(data)
        expected["/" + rel] = data
    os.symlink(f"../{CANARY.decode()}/target", src / _name("link"))
    return expected


def test_no_run_of_the_canary_reaches_the_image(tmp_path: Path) -> None:
    keyfile = tmp_path / "k"
    write_key_file(keyfile)
    key = load_image_key(keyfile)
    src = tmp_path / "src"
    src.mkdir()
    expected = _write_tree(src)
    image = tmp_path / "img"
    create_image(image, 16 << 20, key, from_dir=src)

    with open_image(image, key) as fs:
        # Through the file system too: rename, hard link, overwrite, truncate, unlink (freed blocks
        # keep their old ciphertext), and a file unlinked while still open.
        d = fs.resolve("/" + _name("dir"))
        fs.rename(fs.root, _name("tiny").encode(), d, _name("renamed").encode())
        expected[f"/{_name('dir')}/{_name('renamed')}"] = expected.pop("/" + _name("tiny"))
        big = fs.resolve(f"/{_name('dir')}/{_name('nested')}/{_name('big')}")
        fs.link(big, fs.root, _name("hardlink").encode())
        fs.write(big, 1_000_003, CANARY * 9)
        data = bytearray(expected[f"/{_name('dir')}/{_name('nested')}/{_name('big')}"])
        data[1_000_003 : 1_000_003 + 9 * len(CANARY)] = CANARY * 9
        expected[f"/{_name('dir')}/{_name('nested')}/{_name('big')}"] = bytes(data)
        expected["/" + _name("hardlink")] = bytes(data)
        fs.sync()
        gone = fs.create(fs.root, _name("gone").encode())
        fs.write(gone, 0, CANARY * 100)
        fs.sync()
        fs.unlink(fs.root, _name("gone").encode())
        orphan = fs.create(fs.root, _name("orphan").encode())
        fs.open(orphan)
        fs.unlink(fs.root, _name("orphan").encode())
        fs.write(orphan, 0, CANARY * 50)
        fs.sync()

    with open_image(image, key, commit=False) as fs:
        for path, content in expected.items():
            ino = fs.resolve(path)
            assert fs.read(ino, 0, fs.stat(ino).size) == content, path  # the canary was really written
        assert (
            fs.readlink(fs.resolve("/" + _name("link"), follow=False))
            == f"../{CANARY.decode()}/target".encode()
        )

    for leaked in (image, image.with_name("img.counter")):
        assert canary_runs(leaked.read_bytes()) == [], leaked


def test_the_detector_finds_any_run_at_any_offset(tmp_path: Path) -> None:
    keyfile = tmp_path / "k"
    write_key_file(keyfile)
    image = tmp_path / "img"
    create_image(image, 1 << 20, load_image_key(keyfile))
    clean = image.read_bytes()
    assert canary_runs(clean) == []
    for at, start in ((0, 0), (4093, 48), (len(clean) - RUN, 17), (777_777, 31)):
        planted = bytearray(clean)
        planted[at : at + RUN] = CANARY[start : start + RUN]
        assert (at, start) in canary_runs(bytes(planted))
    fifteen = bytearray(clean)
    fifteen[5000 : 5000 + RUN - 1] = CANARY[: RUN - 1]
    assert canary_runs(bytes(fifteen)) == []  # shorter than a run: not counted

"""Private storage speed, each figure as a ratio against a baseline measured in the same run.

Run: ``.venv/bin/python -m bench.bench_storage [--size 256M] [--files 2000] [--reads 200000] [--dir DIR]``.

* Sequential write, then read after a fresh mount, of ``--size`` bytes in 1 MiB calls through the file
  system (write includes the final sync), against AES-256-GCM from ``cryptography`` encrypting and
  decrypting the same 1 MiB buffers on one core. Target: ratio >= 0.5.
* 4 KiB random reads from the warm block cache, per second, against ``os.pread`` of 4 KiB from a host
  file in the page cache. Target: more than 50,000 per second.
* "Create a file, write 4 KiB, fsync" in a loop, against the same loop on the host file system
  (``os.open``, ``os.write``, ``os.fsync``, ``os.close``) in the directory holding the image.
  Target: ratio >= 0.5.

The image and the host files go under ``--dir`` (default: a temporary directory in the current one, so
fsync meets the same disk as the host loop).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from haven.shield.storage.image import create_image, open_image, parse_size

MIB = 1 << 20
BLOCK = 4096
KEY = bytes(range(32))  # a benchmark image: its key protects nothing


def _row(name: str, ours: float, base: float, unit: str, target: str) -> None:
    print(f"{name:<34} {ours:>12,.1f} {base:>12,.1f} {unit:<9} {ours / base:6.2f}   {target}")


def _aes(size: int) -> tuple[float, float]:
    """MB/s of AES-256-GCM encrypt and decrypt over 1 MiB buffers, ``size`` bytes in all, one core."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    buf = os.urandom(MIB)
    prefix = os.urandom(8)
    n = size // MIB
    t = time.perf_counter()
    for i in range(n):
        aead.encrypt(prefix + i.to_bytes(4, "big"), buf, None)
    enc = size / (time.perf_counter() - t) / 1e6
    nonce = prefix + n.to_bytes(4, "big")
    sealed = aead.encrypt(nonce, buf, None)
    t = time.perf_counter()
    for _ in range(n):
        aead.decrypt(nonce, sealed, None)
    dec = size / (time.perf_counter() - t) / 1e6
    return enc, dec


def _sequential(work: Path, size: int) -> None:
    image = work / "seq.img"
    create_image(image, size + size // 4 + 16 * MIB, KEY)
    chunk = os.urandom(MIB)
    with open_image(image, KEY) as fs:
        ino = fs.create(fs.root, b"big")
        t = time.perf_counter()
        for i in range(size // MIB):
            fs.write(ino, i * MIB, chunk)
        fs.sync()
        write = size / (time.perf_counter() - t) / 1e6
    with open_image(image, KEY, commit=False) as fs:
        ino = fs.resolve("/big")
        t = time.perf_counter()
        for i in range(size // MIB):
            if len(fs.read(ino, i * MIB, MIB)) != MIB:
                raise SystemExit("short read")
        read = size / (time.perf_counter() - t) / 1e6
    image.unlink()
    enc, dec = _aes(size)
    _row(f"sequential write {size // MIB} MiB, 1 MiB calls", write, enc, "MB/s", "AES-GCM encrypt; >= 0.5")
    _row(f"sequential read {size // MIB} MiB, 1 MiB calls", read, dec, "MB/s", "AES-GCM decrypt; >= 0.5")


def _random_reads(work: Path, reads: int) -> None:
    size = 16 * MIB  # well inside the default 64 MiB cache
    data = os.urandom(size)
    image = work / "rand.img"
    create_image(image, 48 * MIB, KEY)
    rng = random.Random(1)
    offsets = [rng.randrange(size // BLOCK) * BLOCK for _ in range(reads)]
    with open_image(image, KEY) as fs:
        ino = fs.create(fs.root, b"warm")
        fs.write(ino, 0, data)
        fs.sync()
        for at in range(0, size, MIB):  # warm the cache
            fs.read(ino, at, MIB)
        read = fs.read
        t = time.perf_counter()
        for at in offsets:
            read(ino, at, BLOCK)
        ours = reads / (time.perf_counter() - t)
    host = work / "rand.host"
    host.write_bytes(data)
    fd = os.open(host, os.O_RDONLY)
    try:
        pread = os.pread
        t = time.perf_counter()
        for at in offsets:
            pread(fd, BLOCK, at)
        base = reads / (time.perf_counter() - t)
    finally:
        os.close(fd)
    image.unlink()
    host.unlink()
    _row(
        "4 KiB random reads, warm cache", ours, base, "reads/s", f"host pread; {ours:,.0f} > 50,000/s needed"
    )


def _create_fsync(work: Path, files: int) -> None:
    image = work / "files.img"
    create_image(image, 64 * MIB, KEY)
    payload = os.urandom(BLOCK)
    with open_image(image, KEY) as fs:
        d = fs.mkdir(fs.root, b"d")
        t = time.perf_counter()
        for i in range(files):
            ino = fs.create(d, b"f%d" % i)
            fs.write(ino, 0, payload)
            fs.sync()
        ours = files / (time.perf_counter() - t)
    host = work / "host-files"
    host.mkdir()
    t = time.perf_counter()
    for i in range(files):
        fd = os.open(host / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.fsync(fd)
        os.close(fd)
    base = files / (time.perf_counter() - t)
    image.unlink()
    _row("create, write 4 KiB, fsync", ours, base, "files/s", "host os.open/write/fsync; >= 0.5")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="256M", help="bytes for the sequential runs (default 256M)")
    parser.add_argument("--files", type=int, default=2000, help="iterations of the create/fsync loop")
    parser.add_argument("--reads", type=int, default=200_000, help="random 4 KiB reads")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where the image and host files go")
    args = parser.parse_args()
    size = parse_size(args.size) // MIB * MIB
    if size < MIB or args.files < 1 or args.reads < 1:
        parser.error("--size must be at least 1M; --files and --reads positive")

    print(f"{'':<34} {'storage':>12} {'baseline':>12} {'unit':<9} {'ratio':>6}   baseline; target")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-storage-") as tmp:
        work = Path(tmp)
        _sequential(work, size)
        _random_reads(work, args.reads)
        _create_fsync(work, args.files)


if __name__ == "__main__":
    main()

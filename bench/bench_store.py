"""The block layer (SecureStore) against baselines measured in the same run.

Run: ``.venv/bin/python -m bench.bench_store [--mib 256] [--dir DIR] [--commits 300]``.

* sequential write of ``--mib`` MiB in 1 MiB calls (``write_run``), then ``commit`` (durable: the device
  is flushed and the counter advanced), and sequential read of it in 1 MiB calls (``read_many``) after a
  remount (cold cache) — each against single-core AES-256-GCM of ``cryptography`` on 1 MiB buffers;
* 4 KiB random reads from the warm cache, against ``os.pread`` of 4 KiB from the host's page cache;
* the loop "write one 4 KiB block, commit", against "create a file, write 4 KiB, fsync" with ``os``
  calls in the same directory;
* mount (walks and authenticates every tree node) and ``check`` (authenticates every block).

The image lives in ``--dir`` (default: the system's temporary directory); its file system decides what a
flush costs, so the directory and its file system type are printed.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.store import SecureStore

MIB = 1 << 20
BLOCK = 4096


def _best(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _aes_mib_per_s(mib: int) -> float:
    aead = AESGCM(os.urandom(32))
    buffers = [os.urandom(MIB) for _ in range(4)]
    nonce = bytes(12)

    def run() -> None:
        for i in range(mib):
            aead.encrypt(nonce, buffers[i & 3], None)  # the output is dropped, as a sealed run is

    return mib / _best(run, 3)


def _fs_type(path: Path) -> str:
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _row(name: str, ours: float, base: float, unit: str, base_name: str) -> None:
    print(f"{name:<34} {ours:>12.1f} {unit:<9} {base_name:<26} {base:>12.1f} {unit:<9} {ours / base:>6.2f}")


def _sequential(work: Path, mib: int, aes: float) -> None:
    key = os.urandom(32)
    blocks = mib * MIB // BLOCK
    dev = FileBlockDevice.create(work / "seq.img", blocks + blocks // 16 + 64)
    counter = FileCounter.create(work / "seq.counter")
    store = SecureStore.format(dev, key, counter)
    payload = [os.urandom(MIB) for _ in range(4)]
    start = time.perf_counter()
    for i in range(mib):
        store.write_run(i * (MIB // BLOCK), payload[i & 3])
    store.commit()
    write_s = time.perf_counter() - start
    store.close()
    start = time.perf_counter()
    store = SecureStore.mount(dev, key, counter)
    mount_s = time.perf_counter() - start
    per_call = MIB // BLOCK
    start = time.perf_counter()
    for i in range(mib):
        store.read_many(range(i * per_call, (i + 1) * per_call))
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    store.check()
    check_s = time.perf_counter() - start
    store.close()
    dev.close()
    _row(
        f"write {mib} MiB, 1 MiB calls, commit",
        mib / write_s,
        aes,
        "MiB/s",
        "AES-256-GCM 1 MiB",
    )
    _row(f"read {mib} MiB, 1 MiB calls, cold", mib / read_s, aes, "MiB/s", "AES-256-GCM 1 MiB")
    _row("check (authenticate every block)", mib / check_s, aes, "MiB/s", "AES-256-GCM 1 MiB")
    print(f"{'mount (walk every node)':<34} {mount_s * 1e3:>12.1f} ms")


def _random_reads(work: Path) -> None:
    key = os.urandom(32)
    blocks = 4096  # 16 MiB: fits the default 64 MiB cache
    dev = FileBlockDevice.create(work / "rand.img", blocks + 512)
    store = SecureStore.format(dev, key, FileCounter.create(work / "rand.counter"))
    for i in range(blocks // 256):
        store.write_run(i * 256, os.urandom(MIB))
    store.commit()
    store.read_many(range(blocks))  # warm the cache
    rng = random.Random(1)
    lbas = [rng.randrange(blocks) for _ in range(200_000)]
    read = store.read

    def ours() -> None:
        for lba in lbas:
            read(lba)

    fd = os.open(work / "rand.img", os.O_RDONLY)
    pread = os.pread

    def host() -> None:
        for lba in lbas:
            pread(fd, BLOCK, lba * BLOCK)

    ours_s, host_s = _best(ours, 3), _best(host, 3)
    os.close(fd)
    store.close()
    dev.close()
    _row(
        "4 KiB random reads, warm cache",
        len(lbas) / ours_s,
        len(lbas) / host_s,
        "reads/s",
        "os.pread 4 KiB (page cache)",
    )


def _commit_loop(work: Path, commits: int) -> None:
    key = os.urandom(32)
    dev = FileBlockDevice.create(work / "loop.img", commits * 8 + 1024)
    store = SecureStore.format(dev, key, FileCounter.create(work / "loop.counter"))
    data = os.urandom(BLOCK)
    store.write(0, data)
    store.commit()  # the session's nonce reservation is not part of the loop
    start = time.perf_counter()
    for i in range(commits):
        store.write(1 + i, data)
        store.commit()
    ours_s = time.perf_counter() - start
    store.close()
    dev.close()
    host_dir = work / "host-files"
    host_dir.mkdir()
    start = time.perf_counter()
    for i in range(commits):
        fd = os.open(host_dir / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
    host_s = time.perf_counter() - start
    _row("write 4 KiB + commit, loop", commits / ours_s, commits / host_s, "ops/s", "create+write+fsync (os)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="size of the sequential runs")
    parser.add_argument("--dir", type=Path, default=None, help="where the images go (default: temp dir)")
    parser.add_argument("--commits", type=int, default=300, help="iterations of the commit loop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        print(f"images in {work} ({_fs_type(work)}); ratio = ours / baseline\n")
        print(f"{'operation':<34} {'ours':>12} {'':<9} {'baseline':<26} {'':>12} {'':<9} {'ratio':>6}")
        aes = _aes_mib_per_s(64)
        _sequential(work, args.mib, aes)
        _random_reads(work)
        _commit_loop(work, args.commits)


if __name__ == "__main__":
    main()

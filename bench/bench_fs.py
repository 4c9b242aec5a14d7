"""File-system metadata operations at 1,000 and at 100,000 files: per-operation cost and its growth.

Run: ``.venv/bin/python -m bench.bench_fs [--files N] [--image-size 4G] [--sample 500] [--overhead 1000]
[--overhead-only]``.

For each layout — every file in one directory ("flat"), or files three directories deep ("deep":
``/dA/dB/dC/fN``, 50 files a directory, every path the same length at both sizes) — it
builds a file system of 1,000 files, then one of ``--files`` files (100,000 by default), each in its own
4 GiB image (a real SecureStore on a local file), and times, at both sizes:

* ``create``  — the last ``--sample`` files created (the cost at that size, not the average on the way),
  best of rounds of 100;
* ``stat``    — path lookup then stat of a random file (``path_filestat_get``);
* ``open``    — path lookup, open and release of a random file (``path_open`` + ``fd_close``);
* ``readdir`` — resume a listing from a random cookie and read 32 entries (``fd_readdir``).

Each figure is the best of several rounds. The baseline is the same operation at 1,000 files in the
same run; the ratio (cost at N / cost at 1,000) should stay below 2, which is what O(log n) block
touches give (one more tree level).

First it measures the file system's own share of the loop "create a file, write 4 KiB, fsync"
(``--overhead`` iterations): the time in ``create``, ``write`` and writing the changes back to the store
(``sync`` up to the store's commit, the store staging its blocks included) against the whole of the same
loop on the host file system (``os.open``, ``os.write``, ``os.fsync``, ``os.close``) in the same run, and
the store's commit beside it.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.fs import FileSystem
from haven.shield.storage.store import SecureStore

OPS = ("create", "stat", "open", "readdir")
PAGE = 32
PER_DIR = 50
ROUND = 100


def _size(text: str) -> int:
    units = {"K": 10, "M": 20, "G": 30, "T": 40}
    return int(text[:-1]) << units[text[-1].upper()] if text[-1].upper() in units else int(text)


@dataclass
class Layout:
    """Where file ``i`` of ``n`` lives: a directory path (tuple of names) and a file name."""

    deep: bool
    n: int

    def place(self, i: int) -> tuple[tuple[bytes, ...], bytes]:
        name = b"file-%07d.dat" % i
        if not self.deep:
            return (b"flat",), name
        # PER_DIR files in each directory of the third level, so a readdir page is full at both sizes.
        leaves = -(-self.n // PER_DIR)
        fan = max(2, round(leaves ** (1 / 3) + 0.5))
        a, rest = divmod(i // PER_DIR, fan * fan)
        b, c = divmod(rest, fan)
        return (b"d%d" % a, b"d%d" % b, b"d%d" % c), name


class Bench:
    def __init__(self, tmp: Path, layout: Layout, image_size: int, sample: int) -> None:
        self.layout = layout
        self.sample = sample
        tag = f"{'deep' if layout.deep else 'flat'}-{layout.n}"
        self.dev = FileBlockDevice.create(tmp / f"{tag}.img", image_size // 4096)
        self.store = SecureStore.format(self.dev, os.urandom(32), FileCounter.create(tmp / f"{tag}.counter"))
        self.fs = FileSystem.format(self.store)
        self.dirs: dict[tuple[bytes, ...], int] = {(): self.fs.root}
        self.names: list[str] = []

    def _dir(self, path: tuple[bytes, ...]) -> int:
        ino = self.dirs.get(path)
        if ino is None:
            ino = self.fs.mkdir(self._dir(path[:-1]), path[-1])
            self.dirs[path] = ino
        return ino

    def build(self) -> float:
        """Create every file (syncing every 10,000); returns seconds per create over the last ``sample``."""
        fs, n = self.fs, self.layout.n
        for i in range(n - self.sample):
            where, name = self.layout.place(i)
            fs.create(self._dir(where), name)
            if i % 10_000 == 9_999:
                fs.sync()
        fs.sync()
        todo = [self.layout.place(i) for i in range(n - self.sample, n)]
        for where, _ in todo:
            self._dir(where)  # directories are not what is being timed
        best = float("inf")
        for k in range(0, len(todo), ROUND):  # best of several rounds: the machine may be busy
            t = time.perf_counter()
            for where, name in todo[k : k + ROUND]:
                fs.create(self.dirs[where], name)
            best = min(best, (time.perf_counter() - t) / len(todo[k : k + ROUND]))
        fs.sync()
        return best

    def _path(self, i: int) -> str:
        where, name = self.layout.place(i)
        return "/" + "/".join(p.decode() for p in (*where, name))

    def _timed(self, op: Callable[[int], object], picks: list[int]) -> float:
        for i in picks:
            op(i)  # warm the caches: these are the costs of a mounted, running file system
        best = float("inf")
        for _ in range(5):  # best of five rounds: the machine may be busy with other work
            t = time.perf_counter()
            for i in picks:
                op(i)
            best = min(best, (time.perf_counter() - t) / len(picks))
        return best

    def measure(self) -> dict[str, float]:
        fs = self.fs
        rng = random.Random(1)
        picks = [rng.randrange(self.layout.n) for _ in range(self.sample)]
        paths = {i: self._path(i) for i in picks}
        result = {"create": self.build()}

        def stat(i: int) -> object:
            return fs.stat(fs.resolve(paths[i]))

        def open_close(i: int) -> object:
            ino = fs.resolve(paths[i])
            fs.open(ino)
            fs.release(ino)
            return ino

        result["stat"] = self._timed(stat, picks)
        result["open"] = self._timed(open_close, picks)
        # Cookies of random entries of the directories that hold the picks, collected beforehand.
        cookies: dict[int, tuple[int, int]] = {}
        by_dir: dict[int, list[int]] = {}
        for i in picks:
            d = self.dirs[self.layout.place(i)[0]]
            if d not in by_dir:
                by_dir[d] = [e.next_cookie for e in fs.readdir(d)]
            cookies[i] = (d, rng.choice(by_dir[d]))

        def readdir(i: int) -> object:
            d, cookie = cookies[i]
            got = 0
            for _ in fs.readdir(d, cookie):
                got += 1
                if got == PAGE:
                    break
            return got

        result["readdir"] = self._timed(readdir, picks)
        return result

    def close(self) -> None:
        self.store.close()
        self.dev.close()


def overhead(tmp: Path, iterations: int) -> None:
    """The file system's work per create/write/fsync iteration, against the host's whole iteration."""
    dev = FileBlockDevice.create(tmp / "overhead.img", (64 << 20) // 4096)
    store = SecureStore.format(dev, os.urandom(32), FileCounter.create(tmp / "overhead.counter"))
    fs = FileSystem.format(store)
    vol = fs.volume
    payload = os.urandom(4096)
    d = fs.mkdir(fs.root, b"d")
    fs.sync()
    best_fs = best_commit = float("inf")
    try:
        for r in range(3):  # best of three rounds: the machine may be busy
            work = commit = 0.0
            for i in range(iterations):
                t0 = time.perf_counter()
                ino = fs.create(d, b"f%d-%d" % (r, i))
                fs.write(ino, 0, payload)
                vol.flush()  # what sync does before the store's commit
                t1 = time.perf_counter()
                store.commit()
                commit += time.perf_counter() - t1
                work += t1 - t0
            best_fs, best_commit = min(best_fs, work / iterations), min(best_commit, commit / iterations)
    finally:
        store.close()
        dev.close()
    host = tmp / "overhead-host"
    host.mkdir()
    best_host = float("inf")
    for r in range(3):
        t = time.perf_counter()
        for i in range(iterations):
            fd = os.open(host / f"f{r}-{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, payload)
            os.fsync(fd)
            os.close(fd)
        best_host = min(best_host, (time.perf_counter() - t) / iterations)
    print(f"create, write 4 KiB, fsync ({iterations} a round), µs per iteration:")
    print(f"  file system (create + write + write-back) {best_fs * 1e6:9.1f}")
    print(f"  store commit                              {best_commit * 1e6:9.1f}")
    print(f"  host loop (open, write, fsync, close)     {best_host * 1e6:9.1f}")
    print(f"  file system / host loop                   {best_fs / best_host:9.2f}")


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--files", type=int, default=100_000, help="the large size (default 100000)")
    parser.add_argument("--image-size", default="4G", help="each image's size (default 4G)")
    parser.add_argument("--sample", type=int, default=500, help="operations timed per figure (<= 500)")
    parser.add_argument(
        "--overhead", type=int, default=1000, help="iterations of the create/write/fsync loop (0: skip it)"
    )
    parser.add_argument("--overhead-only", action="store_true", help="measure only that loop")
    args = parser.parse_args()
    if args.overhead > 0:
        with tempfile.TemporaryDirectory(dir=".") as tmp:  # fsync on the disk the images use
            overhead(Path(tmp), args.overhead)
    if args.overhead_only:
        return
    small = 1000
    sample = min(args.sample, small // 2)
    print(f"per-operation cost, µs (ratio = cost at {args.files} files / cost at {small} files; target < 2)")
    print(f"{'layout':<6} {'op':<8} {f'{small} files':>12} {f'{args.files} files':>14} {'ratio':>7}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for deep in (False, True):
            figures = []
            for n in (small, args.files):
                bench = Bench(Path(tmp), Layout(deep, n), _size(args.image_size), sample)
                try:
                    figures.append(bench.measure())
                finally:
                    bench.close()
            for op in OPS:
                base, big = figures[0][op], figures[1][op]
                ratio = big / base
                worst = max(worst, ratio)
                label = "deep" if deep else "flat"
                print(f"{label:<6} {op:<8} {base * 1e6:12.1f} {big * 1e6:14.1f} {ratio:6.2f}x")
    print(f"worst ratio {worst:.2f}x ({'meets' if worst < 2 else 'misses'} the target of < 2)")


if __name__ == "__main__":
    main()

"""The cost of the host interface: one crossing, and storage through the two-process boundary.

Run: ``.venv/bin/python -m bench.bench_host [--calls N] [--blocks N]``. The host side runs in a forked
process, as under ``haven run``; every figure is paired with a baseline measured in the same run:

* one crossing — ``clock_now`` (a 24-byte request, a 32-byte answer) and a one-block ``blk_read``
  (4 KiB back) through the stubs, the frame checks, the rule and the dispatcher — against a plain
  socketpair echo of the same sizes between the same two processes;
* storage — format an encrypted image, write N blocks, commit, mount it again and read them all back —
  over the host interface (``HostBlockDevice``, ``HostCounter``) against the same work on the image
  file in one process: the ratio is what the boundary costs an application's storage;
* ``speedtest1`` (SQLite's benchmark, ``tests/apps/build/speedtest1.wasm``) with its database on an
  encrypted image, run by ``haven run``'s two processes (the enclave process confined where seccomp
  is available) against the same bundle and image run in one process (target: ratio <= 1.10; the
  two-process figure includes starting the enclave process).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from haven.host.backend import LocalBackend
from haven.host.dispatcher import Dispatcher
from haven.host.runtime import channel_pair
from haven.shield.hostchannel import HostBlockDevice, HostChannel, HostCounter
from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.store import SecureStore

BLOCK = 4096


def _best(fn: Callable[[], object], rounds: int, batch: int) -> float:
    """Seconds per call: best of ``rounds`` batches of ``batch`` calls."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, (time.perf_counter() - t) / batch)
    return best


def _serve_forked(serve: Callable[[socket.socket], object]) -> tuple[socket.socket, int]:
    ours, theirs = channel_pair()
    pid = os.fork()
    if pid == 0:  # the host process
        ours.close()
        try:
            serve(theirs)
        finally:
            os._exit(0)
    theirs.close()
    return ours, pid


@contextmanager
def _host(backend_for: Callable[[], LocalBackend]) -> Iterator[HostChannel]:
    ours, pid = _serve_forked(lambda sock: Dispatcher(sock, backend_for()).serve())
    host = HostChannel(ours.detach())
    try:
        yield host
    finally:
        host.close()
        os.waitpid(pid, 0)


@contextmanager
def _echo(request: int, answer: int) -> Iterator[Callable[[], None]]:
    """A raw round trip: ``request`` bytes there, ``answer`` bytes back."""

    def serve(sock: socket.socket) -> None:
        reply = bytes(answer)
        buf = bytearray(request)
        while sock.recv_into(buf, request, socket.MSG_WAITALL) == request:
            sock.sendall(reply)

    ours, pid = _serve_forked(serve)
    out, back = bytes(request), bytearray(answer)

    def trip() -> None:
        ours.sendall(out)
        ours.recv_into(back, answer, socket.MSG_WAITALL)

    try:
        yield trip
    finally:
        ours.close()
        os.waitpid(pid, 0)


def _storage(dev: object, counter: object, blocks: int) -> None:
    key = bytes(32)
    store = SecureStore.format(dev, key, counter, cache_bytes=1 << 20)  # type: ignore[arg-type]
    payload = os.urandom(BLOCK)
    for i in range(blocks):
        store.write(i, payload)
    store.commit()
    store.close()
    store = SecureStore.mount(dev, key, counter, cache_bytes=1 << 20)  # type: ignore[arg-type]
    store.read_many(range(blocks))
    store.close()


SPEEDTEST = Path(__file__).resolve().parents[1] / "tests" / "apps" / "build" / "speedtest1.wasm"


def _speedtest_total(output: str) -> float:
    """Seconds on speedtest1's ``TOTAL....  1.234s`` line."""
    for line in output.splitlines():
        if line.strip().startswith("TOTAL"):
            return float(line.rsplit(None, 1)[-1].rstrip("s"))
    raise SystemExit(f"speedtest1 printed no TOTAL line:\n{output[-500:]}")


def _speedtest(size: int, rounds: int) -> None:
    from haven.bundle.build import build_bundle
    from haven.bundle.container import read_bundle, write_bundle
    from haven.host.launch import HostImage, run_bundle
    from haven.libos.console import Console
    from haven.libos.runtime import Application, HostResources, ImageSource
    from haven.shield.confine import seccomp_available
    from haven.shield.storage.image import counter_path_for, create_image, write_key_file
    from haven.shield.storage.keys import load_image_key
    from haven.tee.sgx.sigstruct import generate_signing_key
    from haven.tee.sim.platform import SimPlatform

    if not SPEEDTEST.is_file():
        print(f"speedtest1: {SPEEDTEST} is not built; skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        os.environ["HAVEN_SIM_PLATFORM"] = str(d / "platform.json")
        (d / "app.toml").write_text(
            f'[app]\nmodule = "{SPEEDTEST}"\nargv = ["speedtest1", "--size", "{size}", "/data/t.db"]\n'
            # VACUUM's temporary database goes to TMPDIR: put it on the mount (there is no /tmp).
            'env = { TMPDIR = "/data" }\n'
            '[enclave]\nmemory_limit = "1GiB"\n[[mount]]\nguest = "/data"\nimage = "db"\n'
        )
        bundle_path = d / "app.bundle"
        write_bundle(build_bundle(d / "app.toml", generate_signing_key()), bundle_path)
        key_file = d / "db.key"
        write_key_file(key_file)
        key = load_image_key(key_file)
        times: dict[str, float] = {"one process": float("inf"), "two processes": float("inf")}
        # speedtest1's own TOTAL line: the application's run without process start-up and boot.
        totals: dict[str, float] = {"one process": float("inf"), "two processes": float("inf")}
        confined = seccomp_available()
        devnull = os.open(os.devnull, os.O_WRONLY)
        out_path = d / "speedtest1.out"
        for _ in range(rounds):
            for mode in times:
                image = d / f"db-{mode[:3]}.img"
                for old in (image, counter_path_for(image)):
                    old.unlink(missing_ok=True)
                create_image(image, 256 << 20, key)
                out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                t = time.perf_counter()
                if mode == "one process":
                    bundle = read_bundle(bundle_path)
                    enclave = SimPlatform.open().load_enclave(bundle.image, bundle.sigstruct)
                    device = FileBlockDevice.open(image)
                    source = ImageSource(device=device, counter=FileCounter(counter_path_for(image)), key=key)
                    quiet = Console(None, out, None)
                    app = Application(enclave, HostResources(images={"db": source}, console=quiet))
                    try:
                        outcome = app.run()
                        code = outcome.exit_code
                        if outcome.message:
                            print(f"  {outcome.message}")
                    finally:
                        app.close()
                        device.close()
                else:
                    images = {"db": HostImage(image, counter_path_for(image), key_file)}
                    code = run_bundle(bundle_path, images, confine=confined, console=(None, out, devnull))
                times[mode] = min(times[mode], time.perf_counter() - t)
                os.close(out)
                totals[mode] = min(totals[mode], _speedtest_total(out_path.read_text()))
                assert code == 0, f"speedtest1 exited with {code} ({mode})"
        os.close(devnull)
    one, two = times["one process"], times["two processes"]
    print(f"speedtest1 --size {size}, database on an encrypted image (best of {rounds}):")
    t_one, t_two = totals["one process"], totals["two processes"]
    mode = "confined" if confined else "unconfined"
    print("  speedtest1's own TOTAL (the application's run):")
    print(f"    one process   {t_one:8.2f} s")
    print(f"    two processes {t_two:8.2f} s   ({mode})   ratio {t_two / t_one:.2f} (target <= 1.10)")
    print("  the whole command (with process start-up, bundle read, EINIT, module load):")
    print(f"    one process   {one:8.2f} s")
    print(f"    two processes {two:8.2f} s   ({mode})   ratio {two / one:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speedtest-size", type=int, default=20)
    ap.add_argument("--speedtest-rounds", type=int, default=2)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    _speedtest(a.speedtest_size, a.speedtest_rounds)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image"
        FileBlockDevice.create(image, 16).close()

        def backend() -> LocalBackend:
            return LocalBackend(devices=[FileBlockDevice.open(image)])

        print("one crossing (two processes, best of rounds):")
        with _host(backend) as host:
            HostBlockDevice(host, 0)  # blk_size, so blk_read's rule knows the block size
            clock = _best(host.clock_now, a.rounds, a.calls)
            read = _best(lambda: host.blk_read(0, [(3, 1)]), a.rounds, a.calls)
        for label, ours, request, answer in (
            ("clock_now", clock, 24, 24 + 8),
            ("blk_read, 1 block", read, 24 + 4 + 4 + 12, 24 + 4 + BLOCK),
        ):
            with _echo(request, answer) as trip:
                raw = _best(trip, a.rounds, a.calls)
            print(f"  {label:18} {ours * 1e6:7.1f} µs   raw echo of the same sizes {raw * 1e6:6.1f} µs   "
                  f"ratio {ours / raw:5.2f}")  # fmt: skip

        print(f"storage: format, write {a.blocks} blocks, commit, mount, read them back:")
        times = {}
        for where in ("one process", "two processes"):
            best = float("inf")
            for r in range(a.rounds):
                path = Path(tmp) / f"store-{where[:3]}-{r}"
                FileBlockDevice.create(path, a.blocks + a.blocks // 8 + 64).close()
                FileCounter.create(path.with_suffix(".ctr"))
                if where == "one process":
                    dev = FileBlockDevice.open(path)
                    t = time.perf_counter()
                    _storage(dev, FileCounter(path.with_suffix(".ctr")), a.blocks)
                    best = min(best, time.perf_counter() - t)
                    dev.close()
                    continue

                def served(p: Path = path) -> LocalBackend:
                    return LocalBackend(devices=[FileBlockDevice.open(p)],
                                        counters=[FileCounter(p.with_suffix(".ctr"))])  # fmt: skip

                with _host(served) as host:
                    for _ in range(100):  # wake the host process up before the clock starts
                        host.clock_now()
                    before = host.crossings
                    t = time.perf_counter()
                    _storage(HostBlockDevice(host, 0), HostCounter(host, 0), a.blocks)
                    best = min(best, time.perf_counter() - t)
                    crossings = host.crossings - before
            times[where] = best
        print(f"  one process   {times['one process'] * 1e3:8.1f} ms")
        print(f"  two processes {times['two processes'] * 1e3:8.1f} ms   ({crossings} crossings)   "
              f"ratio {times['two processes'] / times['one process']:5.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

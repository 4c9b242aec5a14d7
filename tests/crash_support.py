"""The crash harness: run :mod:`tests.crash_writer` on an image, SIGKILL it at a random instant, then
check the image and compare its tree with the writer's journal.

The rule checked after every kill: the image mounts, ``check`` (every block, the Merkle tree, the
counter, the file system's structure) passes, and the tree equals exactly

* the state of the last sync the journal records as done (or, with none, the state the round began
  from), or
* the state of the sync recorded as pending after it: the kill fell after the commit reached the disk
  and the counter but before the writer could record it.

Nothing else is allowed: not a mix of the two, not any state between syncs. Used by
``tests/test_storage_crash.py`` and ``bench/crash_soak.py``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from haven.shield.storage.image import check, create_image, open_image, write_key_file
from haven.shield.storage.keys import load_image_key
from tests.crash_writer import tree_state

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32 << 20


class CrashCheckFailed(AssertionError):
    pass


@dataclass
class CrashImage:
    """An image under test and what its tree must hold when the next round starts."""

    image: Path
    keyfile: Path
    counter: Path
    work: Path
    state: dict[str, str] = field(default_factory=dict)
    rounds: int = 0

    @classmethod
    def make(cls, work: Path) -> CrashImage:
        work.mkdir(parents=True, exist_ok=True)
        keyfile = work / "image.key"
        write_key_file(keyfile)
        image, counter = work / "crash.img", work / "crash.img.counter"
        create_image(image, IMAGE_SIZE, load_image_key(keyfile), counter_path=counter)
        return cls(image, keyfile, counter, work)


@dataclass(frozen=True)
class RoundResult:
    killed: bool  # False if the writer had finished its operations before the kill
    syncs_done: int  # syncs the journal records as done
    mid_sync: bool  # a pending record without its done record: the kill fell inside a sync
    advanced: bool  # the image is at the pending state (the commit landed, its record did not)
    delay: float


def _journal(path: Path) -> list[dict[str, object]]:
    """Complete records only: a line torn by the kill (no newline yet) was never written."""
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")[:-1]
    return [json.loads(line) for line in lines]


def _candidates(records: list[dict[str, object]], before: dict[str, str]) -> tuple[list[dict[str, str]], int]:
    states: dict[int, dict[str, str]] = {}
    done = 0
    for r in records:
        seq = int(r["seq"])  # type: ignore[call-overload]
        if r["phase"] == "pending":
            states[seq] = r["state"]  # type: ignore[assignment]
        elif r["phase"] == "done":
            if seq not in states:
                raise CrashCheckFailed(f"journal: done record {seq} without its pending record")
            done = seq
    allowed = [states[done] if done else before]
    if done + 1 in states:
        allowed.append(states[done + 1])
    return allowed, done


def _diff(actual: dict[str, str], expected: dict[str, str]) -> str:
    missing = sorted(set(expected) - set(actual))[:5]
    extra = sorted(set(actual) - set(expected))[:5]
    changed = sorted(p for p in set(actual) & set(expected) if actual[p] != expected[p])[:5]
    return f"missing {missing}, unexpected {extra}, different {changed}"


def run_round(
    img: CrashImage, rng: random.Random, *, max_delay: float = 0.25, ops: int = 100_000
) -> RoundResult:
    """One writer run on ``img`` killed at a random instant, then the checks (raises CrashCheckFailed)."""
    img.rounds += 1
    journal = img.work / f"journal-{img.rounds}.jsonl"
    errors = img.work / f"writer-{img.rounds}.err"
    seed = rng.randrange(1 << 32)
    argv = [
        sys.executable,
        "-m",
        "tests.crash_writer",
        str(img.image),
        str(img.keyfile),
        str(img.counter),
        str(journal),
        str(seed),
        str(ops),
    ]
    with errors.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    try:
        if rng.random() < 0.15:
            delay = rng.uniform(0, 0.15)  # sometimes during start-up and mount (a mount may finish a commit)
        else:
            line = proc.stdout.readline()
            if line != b"ready\n":
                proc.wait()
                raise CrashCheckFailed(
                    f"round {img.rounds}: the writer did not start: {errors.read_text()[-2000:]}"
                )
            delay = rng.uniform(0, max_delay)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code not in (0, -signal.SIGKILL):
        raise CrashCheckFailed(
            f"round {img.rounds}: the writer failed (exit {code}): {errors.read_text()[-2000:]}"
        )
    where = f"round {img.rounds} (seed {seed}, delay {delay:.3f}s)"
    allowed, actual, done = verify(img, journal, where)
    for leftover in (journal, errors):
        leftover.unlink(missing_ok=True)
    return RoundResult(
        killed=code != 0,
        syncs_done=done,
        mid_sync=len(allowed) > 1,
        advanced=len(allowed) > 1 and actual == allowed[1] and actual != allowed[0],
        delay=delay,
    )


def verify(img: CrashImage, journal: Path, where: str) -> tuple[list[dict[str, str]], dict[str, str], int]:
    """Check the image after a writer stopped, against its journal; on success the image's tree becomes
    the state the next round starts from. Returns (allowed states, the image's state, syncs done)."""
    allowed, done = _candidates(_journal(journal), img.state)
    key = load_image_key(img.keyfile)
    try:
        check(img.image, key, img.counter)
        with open_image(img.image, key, img.counter, commit=False) as fs:
            actual = tree_state(fs)
    except Exception as e:
        raise CrashCheckFailed(f"{where}: {e}") from e
    if actual not in allowed:
        raise CrashCheckFailed(
            f"{where}, {done} syncs done: the image holds neither the last synced state "
            f"({_diff(actual, allowed[0])})"
            + (f" nor the one being synced ({_diff(actual, allowed[1])})" if len(allowed) > 1 else "")
        )
    img.state = actual
    return allowed, actual, done


def _soak_one(work: Path, kills: int, seed: int, max_delay: float) -> list[RoundResult]:
    img = CrashImage.make(work)
    rng = random.Random(seed)
    return [run_round(img, rng, max_delay=max_delay) for _ in range(kills)]


def soak(work: Path, kills: int, *, seed: int, images: int = 2, max_delay: float = 0.25) -> list[RoundResult]:
    """``kills`` rounds spread over ``images`` images, each driven by its own process side by side.

    Processes, not threads: a writer forked by one thread would inherit (until its exec) another
    thread's descriptor of an image, and with it the image's lock.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rng = random.Random(seed)
    shares = [kills // images + (1 if i < kills % images else 0) for i in range(images)]
    with ProcessPoolExecutor(images, mp_context=multiprocessing.get_context("spawn")) as ex:
        futures = [
            ex.submit(_soak_one, work / f"image{i}", share, rng.randrange(1 << 32), max_delay)
            for i, share in enumerate(shares)
        ]
        return [r for f in futures for r in f.result()]


def summary(results: list[RoundResult], seconds: float) -> str:
    return (
        f"{len(results)} rounds in {seconds:.1f}s: {sum(r.killed for r in results)} killed mid-workload, "
        f"{sum(r.mid_sync for r in results)} inside a sync, {sum(r.advanced for r in results)} found the "
        f"unrecorded commit, {sum(r.syncs_done for r in results)} syncs recorded"
    )

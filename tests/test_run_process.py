"""`haven run` over two processes: the untrusted runtime serving the confined enclave process.

A bundle with an encrypted mount boots in its own process, confines itself and reaches its image,
counter, clock and console only through the host interface; a lying host makes it fail stop.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from haven.cli.main import main
from haven.host import launch, runtime
from haven.host.adversary import Adversary, Fault, Plan
from haven.host.dispatcher import HostBackend
from haven.shield.confine import seccomp_available
from haven.shield.hostif import EXIT_VIOLATION
from haven.shield.storage.image import counter_path_for, create_image, open_image
from tests.sim_helpers import make_platform
from tests.test_libos_run import KEY, WRITER, make_bundle

needs_seccomp = pytest.mark.skipif(not seccomp_available(), reason="this kernel has no seccomp filter mode")
PLAINTEXT = b"hi from /data"
TIMEOUT = 60.0  # a run that takes longer has hung: the runtime kills it and the test fails


@pytest.fixture
def app(tmp_path: Path, platform_path: Path) -> tuple[Path, dict[str, launch.HostImage]]:
    make_platform(platform_path)
    bundle = make_bundle(tmp_path, WRITER, '[[mount]]\nguest = "/data"\nimage = "data"\n')
    image = tmp_path / "data.img"
    create_image(image, 4 << 20, KEY)
    keyfile = tmp_path / "data.key"
    keyfile.write_text(KEY.hex())
    return bundle, {"data": launch.HostImage(image, counter_path_for(image), keyfile)}


def _run(
    bundle: Path, images: dict[str, launch.HostImage], plan: Plan | None = None, **kw: object
) -> tuple[int, Adversary]:
    made: list[Adversary] = []

    def wrap(backend: HostBackend) -> HostBackend:
        made.append(Adversary(backend, plan))
        return made[-1]

    code = launch.run_bundle(bundle, images, wrap=wrap, timeout=TIMEOUT, **kw)  # type: ignore[arg-type]
    return code, made[0]


def _written(images: dict[str, launch.HostImage]) -> bytes:
    with open_image(images["data"].image, KEY, commit=False) as fs:
        return fs.read(fs.lookup(fs.root, b"out.txt"), 0, 100)


@needs_seccomp
def test_a_confined_enclave_writes_its_image_and_exits_with_its_code(
    app: tuple[Path, dict[str, launch.HostImage]], capfd: pytest.CaptureFixture[str]
) -> None:
    bundle, images = app
    code, host = _run(bundle, images)
    assert code == 3
    assert _written(images) == PLAINTEXT + b"\n"
    assert PLAINTEXT not in images["data"].image.read_bytes()
    # The app's stdout reached the host's stdout as a console_write the host served, and the image
    # was read and written only through the host interface.
    assert min(host.counts[c] for c in ("console_write", "blk_read", "blk_write", "counter_advance")) >= 1
    assert capfd.readouterr().out == "hi from /data\n"
    assert PLAINTEXT not in b"".join(host.seen)  # no block the host was handed holds it


def test_the_cli_runs_the_bundle_in_two_processes(
    app: tuple[Path, dict[str, launch.HostImage]], capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    bundle, images = app
    calls: list[bool] = []
    real = launch.run_bundle

    def spy(*args: object, **kw: object) -> int:
        calls.append(bool(kw["confine"]))
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(launch, "run_bundle", spy)
    argv = ["run", "--no-cache", "--image", f"data={images['data'].image}",
            "--image-key", f"data={images['data'].key_file}"]  # fmt: skip
    if seccomp_available():
        assert main([*argv, str(bundle)]) == 3
        assert calls == [True]
    assert main([*argv, "--unconfined", str(bundle)]) == 3
    assert calls[-1] is False
    assert capfd.readouterr().out.count("hi from /data\n") == len(calls)


def test_without_seccomp_the_cli_refuses_unless_unconfined(
    app: tuple[Path, dict[str, launch.HostImage]], capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    bundle, images = app
    monkeypatch.setattr(runtime, "seccomp_available", lambda: False)
    argv = ["run", "--no-cache", "--image", f"data={images['data'].image}",
            "--image-key", f"data={images['data'].key_file}"]  # fmt: skip
    assert main([*argv, str(bundle)]) == 1
    err = capfd.readouterr().err
    assert err.startswith("haven: error: ") and "no seccomp" in err and "--unconfined" in err
    assert err.count("\n") == 1
    assert main([*argv, "--unconfined", str(bundle)]) == 3


def _honest_counts(bundle: Path, images: dict[str, launch.HostImage], tmp_path: Path) -> dict[str, int]:
    # The same run on a copy of the image, to learn how often each call is made.
    src = images["data"]
    copy = {"data": launch.HostImage(tmp_path / "copy.img", tmp_path / "copy.img.counter", src.key_file)}
    copy["data"].image.write_bytes(src.image.read_bytes())
    copy["data"].counter.write_bytes(src.counter.read_bytes())
    code, host = _run(bundle, copy)
    assert code == 3
    return dict(host.counts)


# Faults that break a rule or the storage's integrity: the enclave must stop with exit 70 and the
# named violation, quickly.
VIOLATIONS = [
    ("blk_read", Fault.CORRUPT, ("blk_read: ", "storage: ")),
    ("blk_read", Fault.REPLAY, ("blk_read: ", "storage: ")),
    ("blk_read", Fault.SWAP_BLOCKS, ("storage: ",)),
    ("counter_read", Fault.STALE_COUNTER, ("counter_read: ", "counter_advance: ", "storage: ")),
    ("blk_size", Fault.OUT_OF_RANGE, ("blk_size: ",)),
]


@needs_seccomp
@pytest.mark.parametrize(("call", "fault", "named"), VIOLATIONS, ids=lambda x: getattr(x, "value", None))
def test_a_lying_host_makes_the_enclave_fail_stop(
    app: tuple[Path, dict[str, launch.HostImage]], tmp_path: Path, capfd: pytest.CaptureFixture[str],
    call: str, fault: Fault, named: tuple[str, ...],
) -> None:  # fmt: skip
    bundle, images = app
    counts = _honest_counts(bundle, images, tmp_path)
    capfd.readouterr()
    plan = Plan.single(call, fault, counts, seed=7)
    code, host = _run(bundle, images, plan, grace=5.0)
    assert [(n, f) for n, _, f in host.applied] == [(call, fault)]
    err = capfd.readouterr().err
    assert code == EXIT_VIOLATION, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("haven: host violation: ")]
    assert line.removeprefix("haven: host violation: ").startswith(named), line
    assert "Traceback" not in err


@needs_seccomp
def test_a_dropped_answer_fails_stop_instead_of_hanging(
    app: tuple[Path, dict[str, launch.HostImage]], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bundle, images = app
    counts = _honest_counts(bundle, images, tmp_path)
    code, _ = _run(bundle, images, Plan.single("blk_read", Fault.DROP, counts, seed=3), grace=1.0)
    assert code == EXIT_VIOLATION
    assert "haven: host violation: blk_read: no answer within 1 s" in capfd.readouterr().err


@needs_seccomp
def test_time_running_backwards_is_floored_not_seen(
    app: tuple[Path, dict[str, launch.HostImage]], tmp_path: Path
) -> None:
    # An earlier wall time is what NTP does too, so it is no violation: the enclave keeps its floor
    # (the clock_now rule) and the run completes with the honest result.
    bundle, images = app
    counts = _honest_counts(bundle, images, tmp_path)
    assert counts["clock_now"] >= 1  # the file system stamps the new file with the host's time
    code, host = _run(bundle, images, Plan.single("clock_now", Fault.TIME_BACKWARDS, counts, seed=1))
    assert [(n, f) for n, _, f in host.applied] == [("clock_now", Fault.TIME_BACKWARDS)]
    assert code == 3 and _written(images) == PLAINTEXT + b"\n"

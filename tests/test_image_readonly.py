"""`haven image ls/get/check/info` open images read-only: they change nothing, share an image, and work
on an image file the user may only read."""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from haven.cli.main import main
from haven.shield.storage.errors import StorageError
from haven.shield.storage.fs import FsError
from haven.shield.storage.image import check, open_image
from haven.shield.storage.keys import load_image_key

REPO = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "image.key"
    assert run(capsys, "image", "keygen", "-o", path)[0] == 0
    return path


@pytest.fixture
def image(tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """An image with a file, a directory, and an orphan (a file unlinked while open, never released)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "hello.txt").write_bytes(b"hello, image\n")
    (src / "sub" / "data.bin").write_bytes(os.urandom(50_000))
    path = tmp_path / "disk.img"
    code, _, err = run(capsys, "image", "create", path, "--size", "4M", "--key", key, "--from", src)
    assert code == 0, err
    with open_image(path, load_image_key(key)) as fs:
        ino = fs.create(fs.root, b"orphan")
        fs.write(ino, 0, b"unlinked while open")
        fs.open(ino)
        fs.unlink(fs.root, b"orphan")
    return path


def test_the_read_only_commands_change_nothing(
    tmp_path: Path, image: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counter = image.with_name(image.name + ".counter")
    before = _digest(image), _digest(counter)
    code, out, _ = run(capsys, "image", "ls", image, "--key", key)
    assert code == 0 and out.split() == ["hello.txt", "sub/"]
    code, _, err = run(capsys, "image", "get", image, "/sub", tmp_path / "out", "--key", key)
    assert code == 0, err
    copied = (tmp_path / "out" / "data.bin").read_bytes()
    assert copied == (tmp_path / "src" / "sub" / "data.bin").read_bytes()
    code, out, _ = run(capsys, "image", "check", image, "--key", key)
    assert code == 0 and "1 orphans" in out  # left for the next writable mount, and accepted
    code, out, _ = run(capsys, "image", "info", image, "--key", key)
    assert code == 0 and ", 5 inodes" in out  # root, hello.txt, sub, data.bin and the orphan
    assert (_digest(image), _digest(counter)) == before
    # The next writable mount reclaims the orphan.
    with open_image(image, load_image_key(key)) as fs:
        assert fs.statfs().files == 4
    assert check(image, load_image_key(key)).orphans == 0


def test_read_only_opens_share_an_image_and_exclude_writers(
    image: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = load_image_key(key)
    with open_image(image, k, writable=False) as first, open_image(image, k, writable=False) as second:
        assert first.read(first.resolve("/hello.txt"), 0, 5) == b"hello"
        assert second.read(second.resolve("/hello.txt"), 0, 5) == b"hello"
        code, out, _ = run(capsys, "image", "ls", image, "--key", key)  # a third reader
        assert code == 0 and "hello.txt" in out
        code, _, err = run(capsys, "image", "put", image, key, "/k", "--key", key)
        assert code == 1 and "in use by another process" in err and err.count("\n") == 1
        with pytest.raises(FsError, match="read-only"):
            first.mkdir(first.root, b"x")
    with open_image(image, k, commit=False):
        for command in (["ls", image], ["check", image], ["info", image], ["get", image, "/hello.txt", "-"]):
            code, _, err = run(capsys, "image", *command, "--key", key)
            assert code == 1 and "in use by another process" in err and err.count("\n") == 1, command
        with pytest.raises(StorageError, match="in use by another process"):
            open_image(image, k, writable=False).__enter__()


def _without_dac_override() -> None:
    """In the child, before exec: give up root's power to ignore file permissions (so mode 0400 binds
    root too), by dropping the capabilities from the bounding set (prctl PR_CAPBSET_DROP)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24  # <linux/prctl.h>
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER (<linux/capability.h>)
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _haven(*argv: object) -> subprocess.CompletedProcess[str]:
    """``haven ARGV`` in a process that file permissions bind, whoever runs the tests."""
    return subprocess.run(
        [sys.executable, "-m", "haven", *map(str, argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
        check=False,
    )


def test_an_image_the_user_may_only_read_can_be_inspected(tmp_path: Path, image: Path, key: Path) -> None:
    image.chmod(0o400)
    before = _digest(image)
    # The control: permissions really bind the child (a writable open is refused).
    denied = _haven("image", "put", image, key, "/k", "--key", key)
    assert denied.returncode == 1 and "Permission denied" in denied.stderr, denied.stderr
    assert denied.stderr.startswith("haven: error: ") and denied.stderr.count("\n") == 1

    listed = _haven("image", "ls", image, "--key", key)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["hello.txt", "sub/"]
    got = _haven("image", "get", image, "/hello.txt", tmp_path / "hello", "--key", key)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "hello").read_bytes() == b"hello, image\n"
    checked = _haven("image", "check", image, "--key", key)
    assert checked.returncode == 0 and "ok" in checked.stdout, checked.stderr
    shown = _haven("image", "info", image, "--key", key)
    assert shown.returncode == 0 and "version" in shown.stdout, shown.stderr
    assert _digest(image) == before

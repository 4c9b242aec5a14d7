"""`haven image ...`: make, list, copy out and in, check and describe images; every fault one line."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from haven.cli.main import main
from haven.shield.storage.image import ImageError, parse_size


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def fails(capsys: pytest.CaptureFixture[str], *argv: object, code: int = 1) -> str:
    got, out, err = run(capsys, *argv)
    assert got == code, (out, err)
    assert err.startswith("haven: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "image.key"
    assert run(capsys, "image", "keygen", "-o", path)[0] == 0
    return path


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello, image\n")
    (root / "sub" / "big.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "deep" / "empty").write_bytes(b"")
    (root / "sub" / "deep" / "name \xe9 \u2603 ünïcode").write_text("ok")
    os.symlink("../hello.txt", root / "sub" / "link")
    os.link(root / "hello.txt", root / "sub" / "hard.txt")
    os.chmod(root / "sub" / "big.bin", 0o600)
    os.utime(root / "hello.txt", ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
    return root


@pytest.fixture
def image(tmp_path: Path, key: Path, src: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "disk.img"
    code, out, err = run(capsys, "image", "create", path, "--size", "8M", "--key", key, "--from", src)
    assert code == 0, err
    assert err == ""  # stderr is not a terminal: no progress bars
    assert f"wrote {path}" in out and "version" in out
    return path


def _tree(root: Path, *, links: bool = True) -> dict[str, object]:
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                nlink = st.st_nlink if links else None
                found[rel] = ("file", p.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns, nlink)
    return found


# ------------------------------------------------------------------------------ keys and sizes


def test_keygen_writes_a_private_hex_key_and_never_overwrites(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = key.read_text()
    assert len(text) == 65 and text.endswith("\n") and bytes.fromhex(text.strip())
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "already exists" in fails(capsys, "image", "keygen", "-o", key)
    assert key.read_text() == text
    assert run(capsys, "image", "keygen", "-o", key, "--force")[0] == 0
    assert key.read_text() != text
    assert "does not exist" in fails(capsys, "image", "keygen", "-o", tmp_path / "no" / "k")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("64M", 64 << 20),
        ("4G", 4 << 30),
        ("512MiB", 512 << 20),
        ("16k", 16 << 10),
        ("1GB", 10**9),
        ("8192B", 8192),
        (" 2 M ", 2 << 20),
        ("1T", 1 << 40),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-4M", "4.5M", "4X", "4MiBB", "0x1000", "four"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ImageError, match="size"):
        parse_size(text)


@pytest.mark.parametrize("size", ["12345", "32K", "4Q"])
def test_create_refuses_a_bad_size(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str], size: str
) -> None:
    assert "size" in fails(capsys, "image", "create", tmp_path / "x.img", "--size", size, "--key", key)
    assert not (tmp_path / "x.img").exists() and not (tmp_path / "x.img.counter").exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"00" * 31, "62 hex digits"),
        (b"\x01" * 33, "neither"),
        (b"QUJD\n", "base64 of 3 bytes"),
    ],
)
def test_bad_key_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(content)
    assert why in fails(capsys, "image", "create", tmp_path / "x.img", "--size", "1M", "--key", bad)
    assert "no such file" in fails(capsys, "image", "ls", tmp_path / "x.img", "--key", tmp_path / "none")


# ------------------------------------------------------------------------------ create, ls, info


def test_create_refuses_to_replace_an_image_or_a_counter(
    tmp_path: Path, image: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = image.read_bytes()
    assert "already exists" in fails(capsys, "image", "create", image, "--size", "8M", "--key", key)
    assert image.read_bytes() == before
    other = tmp_path / "other.img"
    assert "already exists" in fails(
        capsys, "image", "create", other, "--size", "8M", "--key", key, "--counter", f"{image}.counter"
    )
    assert not other.exists()


def test_a_failed_create_leaves_nothing_behind(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "f").write_bytes(os.urandom(3 << 20))
    img = tmp_path / "small.img"
    err = fails(capsys, "image", "create", img, "--size", "1M", "--key", key, "--from", big)
    assert "full" in err or "space" in err.lower()
    assert not img.exists() and not (tmp_path / "small.img.counter").exists()
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "pipe")
    assert "not a regular file" in fails(
        capsys, "image", "create", img, "--size", "1M", "--key", key, "--from", fifo_dir
    )
    assert not img.exists()
    assert "not a directory" in fails(
        capsys, "image", "create", img, "--size", "1M", "--key", key, "--from", big / "f"
    )
    inside = big / "sub" / "x.img"
    inside.parent.mkdir()
    assert "would be inside" in fails(
        capsys, "image", "create", inside, "--size", "1M", "--key", key, "--from", big
    )
    assert "would be inside" in fails(
        capsys, "image", "create", img, "--size", "1M", "--key", key, "--from", big, "--counter", big / "c"
    )
    assert not inside.exists() and not img.exists() and not (big / "c").exists()


def test_ls(image: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "image", "ls", image, "--key", key)
    assert code == 0 and out.splitlines() == ["hello.txt", "sub/"]
    code, out, _ = run(capsys, "image", "ls", image, "sub", "--key", key, "-l")
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in out.splitlines()}
    assert set(lines) == {"big.bin", "deep", "hard.txt", "link"}
    assert lines["big.bin"].startswith("file    0600   1       300000 ")
    assert lines["hard.txt"].split()[2] == "2"
    assert lines["link"].endswith("link -> ../hello.txt")
    code, out, _ = run(capsys, "image", "ls", image, "/sub/deep", "--key", key)
    assert out.splitlines() == ["empty", "name \xe9 \u2603 ünïcode"]
    code, out, _ = run(capsys, "image", "ls", image, "/hello.txt", "--key", key, "-l")
    assert "2020-09-13 12:26:40" in out  # 1_600_000_000 s, as the host file had it
    assert "No such file" in fails(capsys, "image", "ls", image, "/nope", "--key", key)


def test_info_with_and_without_the_key(image: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "image", "info", image)
    assert code == 0
    facts = dict(
        line.split(None, 1) if "  " not in line else [s.strip() for s in line.split("  ", 1)]
        for line in out.splitlines()
    )
    assert facts["file size"] == f"{8 << 20} bytes"
    assert facts["format"] == "version 1"
    assert len(facts["image id"]) == 32
    assert facts["contents"] == "need the key (--key)"
    assert "version" not in facts
    code, out, _ = run(capsys, "image", "info", image, "--key", key)
    assert code == 0
    assert "need the key" not in out and "capacity" in out and "8 inodes" in out
    assert f"({image}.counter)" in out


# ------------------------------------------------------------------------------ get and put


def test_get_the_whole_tree(
    tmp_path: Path, image: Path, key: Path, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    code, out, _ = run(capsys, "image", "get", image, "/", out_dir, "--key", key)
    assert code == 0 and "4 files" in out and "1 further hard links" in out
    assert _tree(out_dir) == _tree(src)
    # into an existing directory: under the entry's own name
    again = tmp_path / "again"
    again.mkdir()
    code, _, _ = run(capsys, "image", "get", image, "/sub", again, "--key", key)
    assert code == 0 and _tree(again / "sub", links=False) == _tree(src / "sub", links=False)
    code, _, _ = run(capsys, "image", "get", image, "sub/link", tmp_path / "l", "--key", key)
    assert code == 0 and os.readlink(tmp_path / "l") == "../hello.txt"
    assert "does not exist" in fails(
        capsys, "image", "get", image, "/hello.txt", tmp_path / "no" / "x", "--key", key
    )
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "hello.txt").mkdir()
    assert "not a regular file" in fails(
        capsys, "image", "get", image, "/hello.txt", tmp_path / "blocker", "--key", key
    )


def test_put_then_get(
    tmp_path: Path, image: Path, key: Path, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = tmp_path / "new.bin"
    new.write_bytes(os.urandom(1_000_001))
    code, out, _ = run(capsys, "image", "put", image, new, "/a/b/c.bin", "--key", key)
    assert code == 0 and "committed version" in out
    code, _, _ = run(capsys, "image", "put", image, src / "sub", "/a", "--key", key)  # into the directory
    assert code == 0
    replacement = tmp_path / "hello.txt"
    replacement.write_bytes(b"replaced")
    assert run(capsys, "image", "put", image, replacement, "/", "--key", key)[0] == 0
    got = tmp_path / "got"
    assert run(capsys, "image", "get", image, "/", got, "--key", key)[0] == 0
    assert (got / "a" / "b" / "c.bin").read_bytes() == new.read_bytes()
    assert _tree(got / "a" / "sub", links=False) == _tree(src / "sub", links=False)
    assert (got / "hello.txt").read_bytes() == b"replaced"
    assert (got / "sub" / "hard.txt").read_bytes() == b"replaced"  # rewritten in place, as cp does
    assert run(capsys, "image", "check", image, "--key", key)[0] == 0
    assert "is not a directory" in fails(
        capsys, "image", "put", image, src / "sub", "/hello.txt", "--key", key
    )
    (tmp_path / "clash").mkdir()
    (tmp_path / "clash" / "sub").write_bytes(b"a file named like a directory of the image")
    assert "is a directory" in fails(
        capsys, "image", "put", image, tmp_path / "clash" / "sub", "/", "--key", key
    )
    assert "No such file" in fails(capsys, "image", "put", image, tmp_path / "missing", "/", "--key", key)
    os.mkfifo(tmp_path / "pipe")
    assert "not a regular file" in fails(capsys, "image", "put", image, tmp_path / "pipe", "/p", "--key", key)


def test_counter_elsewhere(tmp_path: Path, key: Path, src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img, counter = tmp_path / "x.img", tmp_path / "counters" / "x"
    counter.parent.mkdir()
    assert run(capsys, "image", "create", img, "--size", "4M", "--key", key, "--counter", counter)[0] == 0
    assert counter.exists() and not (tmp_path / "x.img.counter").exists()
    assert (
        run(capsys, "image", "put", img, src / "hello.txt", "/h", "--key", key, "--counter", counter)[0] == 0
    )
    assert "counter" in fails(capsys, "image", "ls", img, "--key", key)  # the default counter is absent
    assert run(capsys, "image", "ls", img, "--key", key, "--counter", counter)[0] == 0


# ------------------------------------------------------------------------------ check and attacks


def test_check_passes_on_a_good_image(image: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "image", "check", image, "--key", key)
    assert code == 0 and out.endswith(f"{image}: ok\n") and err == ""
    assert "4 files, 3 directories, 1 symlinks" in out


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def test_check_finds_a_flipped_bit_in_file_data(
    image: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One bit in the middle of the blocks in use: the big file's data, as they are the bulk of them.
    data = image.read_bytes()
    used = [i for i in range(2, len(data) // 4096) if data[i * 4096 : (i + 1) * 4096].count(0) != 4096]
    _flip(image, used[len(used) // 2] * 4096 + 100)
    err = fails(capsys, "image", "check", image, "--key", key)
    assert "block" in err


def test_check_finds_a_wrong_key_and_a_rollback(
    tmp_path: Path, image: Path, key: Path, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.key"
    run(capsys, "image", "keygen", "-o", other)
    assert "wrong image key" in fails(capsys, "image", "check", image, "--key", other)
    old = image.read_bytes()
    assert run(capsys, "image", "put", image, src / "hello.txt", "/again", "--key", key)[0] == 0
    image.write_bytes(old)
    assert "older than the freshness counter" in fails(capsys, "image", "check", image, "--key", key)


def test_check_finds_swapped_superblocks(image: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(image.read_bytes())
    data[:4096], data[4096:8192] = data[4096:8192], data[:4096]
    image.write_bytes(data)
    assert "no superblock authenticates" in fails(capsys, "image", "check", image, "--key", key)


def test_check_finds_a_truncated_or_extended_image(
    image: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = image.stat().st_size
    os.truncate(image, size - 4096)
    assert "truncated or extended" in fails(capsys, "image", "check", image, "--key", key)
    os.truncate(image, size + 4096)
    assert "truncated or extended" in fails(capsys, "image", "check", image, "--key", key)
    os.truncate(image, size + 1)
    assert "not a whole number" in fails(capsys, "image", "check", image, "--key", key)


def test_not_an_image(tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(1 << 16))
    (tmp_path / "junk.counter").write_bytes(b"")
    for argv in (["check", junk, "--key", key], ["ls", junk, "--key", key], ["info", junk]):
        fails(capsys, "image", *argv)
    assert "no such file" in fails(capsys, "image", "info", tmp_path / "none")
    assert "is a directory" in fails(capsys, "image", "info", tmp_path)


# ------------------------------------------------------------------------------ progress bars


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal(
    tmp_path: Path, key: Path, src: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tqdm")
    img = tmp_path / "p.img"
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    assert main(["image", "create", str(img), "--size", "4M", "--key", str(key), "--from", str(src)]) == 0
    assert main(["image", "check", str(img), "--key", str(key)]) == 0
    assert main(["image", "get", str(img), "/", str(tmp_path / "out"), "--key", str(key)]) == 0
    monkeypatch.undo()
    shown = tty.getvalue()
    assert "copy" in shown and "check" in shown and "get" in shown and "B/s" in shown
    assert "ok" in capsys.readouterr().out


def test_names_that_are_not_utf8_round_trip(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "s"
    src.mkdir()
    name = os.fsdecode(b"bad\xffname")
    (src / name).write_bytes(b"x")
    img = tmp_path / "w.img"
    assert run(capsys, "image", "create", img, "--size", "1M", "--key", key, "--from", src)[0] == 0
    code, out, _ = run(capsys, "image", "ls", img, "--key", key, "-l")
    assert code == 0 and out.rstrip().endswith("bad\\xffname")
    assert run(capsys, "image", "get", img, "/", tmp_path / "out", "--key", key)[0] == 0
    assert os.listdir(os.fsencode(tmp_path / "out")) == [b"bad\xffname"]

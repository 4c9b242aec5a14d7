"""FileSystem: every namespace operation, its POSIX semantics, and each of its refusals."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from haven.shield.storage.fs import FileSystem, FsError
from haven.shield.storage.fs.records import LINK_MAX, SYMLINK_MAX
from tests.fs_support import Image, every_errno, new_image


@pytest.fixture
def img(tmp_path: Path) -> Image:
    return new_image(tmp_path)


@pytest.fixture
def fs(img: Image) -> FileSystem:
    assert img.fs is not None
    return img.fs


def test_format_gives_an_empty_root(img: Image, fs: FileSystem) -> None:
    st = fs.stat(fs.root)
    assert (st.kind, st.nlink, st.size, st.mode) == ("dir", 2, 0, 0o755)
    assert list(fs.readdir(fs.root)) == []
    assert fs.parent(fs.root) == fs.root
    assert img.check().inodes == 1


def test_create_lookup_stat(fs: FileSystem) -> None:
    ino = fs.create(fs.root, b"a.txt", 0o600)
    assert fs.lookup(fs.root, b"a.txt") == ino
    st = fs.stat(ino)
    assert (st.ino, st.kind, st.mode, st.nlink, st.size) == (ino, "file", 0o600, 1, 0)
    assert st.atime_ns == st.mtime_ns == st.ctime_ns
    root = fs.stat(fs.root)
    assert root.size == 1 and root.mtime_ns == st.ctime_ns


def test_create_exclusive_and_not(fs: FileSystem) -> None:
    ino = fs.create(fs.root, b"f")
    assert every_errno(lambda: fs.create(fs.root, b"f")) == errno.EEXIST
    assert fs.create(fs.root, b"f", exclusive=False) == ino
    other = fs.create(fs.root, b"g", exclusive=False)
    assert other != ino and fs.lookup(fs.root, b"g") == other
    fs.mkdir(fs.root, b"d")
    assert every_errno(lambda: fs.create(fs.root, b"d", exclusive=False)) == errno.EISDIR
    assert every_errno(lambda: fs.create(fs.root, b"d")) == errno.EEXIST


@pytest.mark.parametrize(
    ("name", "code"),
    [
        (b"", errno.EINVAL),
        (b".", errno.EINVAL),
        (b"..", errno.EINVAL),
        (b"a/b", errno.EINVAL),
        (b"a\0b", errno.EINVAL),
        (b"x" * 256, errno.ENAMETOOLONG),
    ],
)
def test_bad_names_are_refused_everywhere(fs: FileSystem, name: bytes, code: int) -> None:
    f = fs.create(fs.root, b"ok")
    d = fs.root
    for op in (
        lambda: fs.create(d, name),
        lambda: fs.mkdir(d, name),
        lambda: fs.symlink(d, name, b"t"),
        lambda: fs.link(f, d, name),
        lambda: fs.lookup(d, name),
        lambda: fs.unlink(d, name),
        lambda: fs.rmdir(d, name),
        lambda: fs.rename(d, b"ok", d, name),
        lambda: fs.rename(d, name, d, b"ok2"),
    ):
        assert every_errno(op) == code


def test_names_are_bytes_of_any_value(fs: FileSystem) -> None:
    names = [b"x" * 255, bytes(range(1, 47)) + bytes(range(48, 256)), "日本語".encode(), b"\xff\xfe"]
    inos = [fs.create(fs.root, n) for n in names]
    assert [fs.lookup(fs.root, n) for n in names] == inos
    assert sorted(e.name for e in fs.readdir(fs.root)) == sorted(names)
    with pytest.raises(TypeError):
        fs.lookup(fs.root, "str")  # type: ignore[arg-type]


def test_lookup_refusals(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    assert every_errno(lambda: fs.lookup(fs.root, b"missing")) == errno.ENOENT
    assert every_errno(lambda: fs.lookup(f, b"x")) == errno.ENOTDIR
    assert every_errno(lambda: fs.lookup(999, b"x")) == errno.ENOENT
    assert every_errno(lambda: fs.stat(999)) == errno.ENOENT
    assert every_errno(lambda: fs.stat(0)) == errno.ENOENT
    assert every_errno(lambda: fs.create(f, b"x")) == errno.ENOTDIR
    assert every_errno(lambda: fs.mkdir(f, b"x")) == errno.ENOTDIR


def test_mkdir_and_rmdir(img: Image, fs: FileSystem) -> None:
    d = fs.mkdir(fs.root, b"d", 0o700)
    st = fs.stat(d)
    assert (st.kind, st.nlink, st.mode, st.size) == ("dir", 2, 0o700, 0)
    assert fs.stat(fs.root).nlink == 3
    assert fs.parent(d) == fs.root
    sub = fs.mkdir(d, b"sub")
    assert fs.stat(d).nlink == 3 and fs.parent(sub) == d
    assert every_errno(lambda: fs.mkdir(fs.root, b"d")) == errno.EEXIST
    assert every_errno(lambda: fs.rmdir(fs.root, b"d")) == errno.ENOTEMPTY
    fs.create(sub, b"f")
    assert every_errno(lambda: fs.rmdir(d, b"sub")) == errno.ENOTEMPTY
    fs.unlink(sub, b"f")
    fs.rmdir(d, b"sub")
    assert fs.stat(d).nlink == 2
    fs.rmdir(fs.root, b"d")
    assert fs.stat(fs.root).nlink == 2
    assert every_errno(lambda: fs.stat(d)) == errno.ENOENT
    assert every_errno(lambda: fs.rmdir(fs.root, b"d")) == errno.ENOENT
    assert img.check().inodes == 1


def test_rmdir_and_unlink_of_the_wrong_kind(fs: FileSystem) -> None:
    fs.create(fs.root, b"f")
    fs.mkdir(fs.root, b"d")
    fs.symlink(fs.root, b"l", b"d")
    assert every_errno(lambda: fs.rmdir(fs.root, b"f")) == errno.ENOTDIR
    assert every_errno(lambda: fs.rmdir(fs.root, b"l")) == errno.ENOTDIR
    assert every_errno(lambda: fs.unlink(fs.root, b"d")) == errno.EISDIR
    assert every_errno(lambda: fs.unlink(fs.root, b"missing")) == errno.ENOENT


def test_parent_of_a_file_is_refused(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    assert every_errno(lambda: fs.parent(f)) == errno.ENOTDIR


def test_symlinks(img: Image, fs: FileSystem) -> None:
    short = fs.symlink(fs.root, b"s", b"target/file")
    long_target = bytes((i % 250) + 1 for i in range(SYMLINK_MAX)).replace(b"\0", b"x")
    long = fs.symlink(fs.root, b"l", long_target)
    assert fs.readlink(short) == b"target/file"
    assert fs.readlink(long) == long_target
    st = fs.stat(long)
    assert (st.kind, st.size, st.mode, st.nlink) == ("symlink", SYMLINK_MAX, 0o777, 1)
    assert every_errno(lambda: fs.symlink(fs.root, b"x", b"y" * (SYMLINK_MAX + 1))) == errno.ENAMETOOLONG
    assert every_errno(lambda: fs.symlink(fs.root, b"x", b"")) == errno.ENOENT
    assert every_errno(lambda: fs.symlink(fs.root, b"x", b"a\0b")) == errno.EINVAL
    assert every_errno(lambda: fs.symlink(fs.root, b"s", b"other")) == errno.EEXIST
    assert every_errno(lambda: fs.readlink(fs.root)) == errno.EINVAL
    # A symlink is not a file: its data cannot be read or written as one.
    assert every_errno(lambda: fs.read(short, 0, 10)) == errno.EINVAL
    assert every_errno(lambda: fs.write(short, 0, b"x")) == errno.EINVAL
    img.check()
    fs = img.remount()
    assert fs.readlink(fs.lookup(fs.root, b"l")) == long_target
    fs.unlink(fs.root, b"l")
    assert img.check().symlinks == 1


def test_hard_links(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    fs.write(f, 0, b"shared")
    d = fs.mkdir(fs.root, b"d")
    before = fs.stat(f).ctime_ns
    fs.link(f, d, b"g")
    assert fs.lookup(d, b"g") == f
    st = fs.stat(f)
    assert st.nlink == 2 and st.ctime_ns > before
    assert every_errno(lambda: fs.link(f, d, b"g")) == errno.EEXIST
    assert every_errno(lambda: fs.link(d, fs.root, b"dirlink")) == errno.EPERM
    assert every_errno(lambda: fs.link(f, f, b"x")) == errno.ENOTDIR
    assert every_errno(lambda: fs.link(999, d, b"x")) == errno.ENOENT
    s = fs.symlink(fs.root, b"s", b"f")
    fs.link(s, d, b"s2")
    assert fs.stat(s).nlink == 2
    fs.unlink(fs.root, b"f")
    assert fs.stat(f).nlink == 1
    assert fs.read(fs.lookup(d, b"g"), 0, 10) == b"shared"
    fs.unlink(d, b"g")
    assert every_errno(lambda: fs.stat(f)) == errno.ENOENT
    img.check()


def test_link_limit(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    rec = fs.volume.inode(f)
    rec.nlink = LINK_MAX  # reaching 65000 names one by one would take a while: start just below it
    fs.volume.put_inode(f, rec)
    assert every_errno(lambda: fs.link(f, fs.root, b"one-more")) == errno.EMLINK


def test_subdirectory_limit(fs: FileSystem) -> None:
    d = fs.mkdir(fs.root, b"d")
    rec = fs.volume.inode(d)
    rec.nlink = LINK_MAX
    fs.volume.put_inode(d, rec)
    assert every_errno(lambda: fs.mkdir(d, b"sub")) == errno.EMLINK
    fs.create(d, b"files-are-fine")


def test_set_times(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    st = fs.stat(f)
    fs.set_times(f, 5, None)
    s1 = fs.stat(f)
    assert (s1.atime_ns, s1.mtime_ns) == (5, st.mtime_ns) and s1.ctime_ns > st.ctime_ns
    fs.set_times(f, None, 7)
    s2 = fs.stat(f)
    assert (s2.atime_ns, s2.mtime_ns) == (5, 7) and s2.ctime_ns > s1.ctime_ns
    fs.set_times(fs.root, 1, 2)
    assert (fs.stat(fs.root).atime_ns, fs.stat(fs.root).mtime_ns) == (1, 2)
    assert every_errno(lambda: fs.set_times(f, -1, None)) == errno.EINVAL
    assert every_errno(lambda: fs.set_times(f, None, 1 << 64)) == errno.EINVAL
    assert every_errno(lambda: fs.set_times(999, 1, 1)) == errno.ENOENT


def test_timestamps_follow_posix(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    t0 = fs.stat(f)
    fs.write(f, 0, b"abc")
    t1 = fs.stat(f)
    assert t1.mtime_ns > t0.mtime_ns and t1.ctime_ns == t1.mtime_ns
    assert t1.atime_ns == t0.atime_ns
    fs.read(f, 0, 3)
    assert fs.stat(f) == t1  # noatime: reading changes nothing
    fs.truncate(f, 1)
    t2 = fs.stat(f)
    assert t2.mtime_ns > t1.mtime_ns
    root = fs.stat(fs.root)
    fs.rename(fs.root, b"f", fs.root, b"g")
    t3 = fs.stat(f)
    assert t3.ctime_ns > t2.ctime_ns and t3.mtime_ns == t2.mtime_ns
    assert fs.stat(fs.root).mtime_ns > root.mtime_ns


def test_open_and_release(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    assert every_errno(lambda: fs.release(f)) == errno.EBADF
    assert every_errno(lambda: fs.open(999)) == errno.ENOENT
    fs.open(f)
    fs.open(f)
    fs.release(f)
    fs.release(f)
    assert every_errno(lambda: fs.release(f)) == errno.EBADF
    assert fs.stat(f).nlink == 1


def test_unlinked_open_file_lives_until_release(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    fs.write(f, 0, b"still here" * 1000)
    fs.open(f)
    fs.unlink(fs.root, b"f")
    assert every_errno(lambda: fs.lookup(fs.root, b"f")) == errno.ENOENT
    assert fs.stat(f).nlink == 0
    assert fs.read(f, 0, 10) == b"still here"
    fs.write(f, 10_000, b"more")
    assert fs.read(f, 10_000, 4) == b"more"
    assert every_errno(lambda: fs.link(f, fs.root, b"back")) == errno.ENOENT
    assert img.check().orphans == 1
    free_before = fs.statfs().blocks_free
    fs.release(f)
    assert every_errno(lambda: fs.stat(f)) == errno.ENOENT
    assert fs.statfs().blocks_free > free_before
    assert img.check().orphans == 0


def test_orphans_are_reclaimed_at_mount(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    fs.write(f, 0, bytes(50_000))
    free_with_file = fs.statfs().blocks_free
    fs.open(f)
    fs.unlink(fs.root, b"f")
    fs.sync()  # the orphan record is committed while the file is open: then the process dies
    assert img.check().orphans == 1
    fs = img.remount(sync=False)
    assert every_errno(lambda: fs.stat(f)) == errno.ENOENT
    assert fs.statfs().blocks_free > free_with_file
    assert img.check().orphans == 0
    fs = img.remount()
    assert img.check().orphans == 0 and fs.statfs().files == 1


def test_removed_directory_open_refuses_new_entries(img: Image, fs: FileSystem) -> None:
    d = fs.mkdir(fs.root, b"d")
    fs.open(d)
    fs.rmdir(fs.root, b"d")
    assert fs.stat(d).nlink == 0
    assert list(fs.readdir(d)) == []
    assert every_errno(lambda: fs.create(d, b"x")) == errno.ENOENT
    assert every_errno(lambda: fs.mkdir(d, b"x")) == errno.ENOENT
    f = fs.create(fs.root, b"f")
    assert every_errno(lambda: fs.link(f, d, b"x")) == errno.ENOENT
    assert every_errno(lambda: fs.rename(fs.root, b"f", d, b"x")) == errno.ENOENT
    assert img.check().orphans == 1
    fs.release(d)
    assert img.check().orphans == 0


def test_statfs_counts(fs: FileSystem) -> None:
    u0 = fs.statfs()
    assert u0.block_size == 4096 and u0.name_max == 255 and u0.files == 1
    f = fs.create(fs.root, b"f")
    fs.write(f, 0, bytes(10 * 4096))
    u1 = fs.statfs()
    assert u1.files == 2 and u0.blocks_free - u1.blocks_free >= 10
    fs.unlink(fs.root, b"f")
    assert fs.statfs().blocks_free == u0.blocks_free


def test_errors_carry_errno_and_message(fs: FileSystem) -> None:
    with pytest.raises(FsError) as info:
        fs.lookup(fs.root, b"nope")
    assert info.value.errno == errno.ENOENT
    assert "nope" in str(info.value) and "No such file" in str(info.value)

"""The writing process of the crash harness: a seeded mixed workload on an image, journalled on the host.

Run as ``python -m tests.crash_writer IMAGE KEYFILE COUNTER JOURNAL SEED OPS``. It mounts the image,
reads its whole tree into a model, prints ``ready``, then performs up to OPS random operations (create,
write, append, truncate, rename, unlink, mkdir, rmdir, symlink, hard link, writes to open unlinked files)
with a ``sync`` every few operations, and exits. Around every sync it appends to JOURNAL (one JSON object
per line, each fsync'd before going on):

* ``{"seq": k, "phase": "pending", "state": {...}}`` before ``sync`` is called: the tree the sync is
  about to make durable;
* ``{"seq": k, "phase": "done"}`` after ``sync`` returned.

``state`` maps every path to ``"dir"``, ``"link:<target>"`` or ``"file:<sha256 of the contents>"``
(:func:`tree_state` computes the same map from a mounted image). The harness kills this process with
SIGKILL at a random instant and then requires the image to equal the last "done" state, or the "pending"
state after it (the kill fell after the commit but before its "done" record).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from pathlib import Path

from haven.shield.storage.fs import FileSystem
from haven.shield.storage.image import open_image
from haven.shield.storage.keys import load_image_key

TOTAL_BYTES = 6 << 20  # past this the workload shrinks files rather than growing them
TOTAL_NAMES = 250  # past this it removes names rather than making them


def tree_state(fs: FileSystem) -> dict[str, str]:
    """Every path of the image (except the root) and what it holds, as the journal records it."""
    state: dict[str, str] = {}
    stack = [(fs.root, "")]
    while stack:
        ino, path = stack.pop()
        for e in fs.readdir(ino):
            child = f"{path}/{os.fsdecode(e.name)}"
            if e.kind == "dir":
                state[child] = "dir"
                stack.append((e.ino, child))
            elif e.kind == "symlink":
                state[child] = "link:" + os.fsdecode(fs.readlink(e.ino))
            else:
                size = fs.stat(e.ino).size
                state[child] = "file:" + hashlib.sha256(fs.read(e.ino, 0, size)).hexdigest()
    return state


class Model:
    """What the tree must hold: names to inodes, file contents per inode, directories, symlinks."""

    def __init__(self, fs: FileSystem) -> None:
        self.fs = fs
        self.dirs: set[str] = {""}
        self.files: dict[str, int] = {}  # path -> inode (hard links share one)
        self.data: dict[int, bytearray] = {}
        self.links: dict[str, str] = {}  # symlink path -> target
        stack = [(fs.root, "")]
        while stack:
            ino, path = stack.pop()
            for e in fs.readdir(ino):
                child = f"{path}/{os.fsdecode(e.name)}"
                if e.kind == "dir":
                    self.dirs.add(child)
                    stack.append((e.ino, child))
                elif e.kind == "symlink":
                    self.links[child] = os.fsdecode(fs.readlink(e.ino))
                else:
                    self.files[child] = e.ino
                    if e.ino not in self.data:
                        self.data[e.ino] = bytearray(fs.read(e.ino, 0, fs.stat(e.ino).size))

    def state(self) -> dict[str, str]:
        state = {d: "dir" for d in self.dirs if d}
        state.update({p: "link:" + t for p, t in self.links.items()})
        for p, ino in self.files.items():
            state[p] = "file:" + hashlib.sha256(self.data[ino]).hexdigest()
        return state

    def total(self) -> int:
        return sum(len(d) for d in self.data.values())

    def lookup(self, path: str) -> tuple[int, bytes]:
        head, _, name = path.rpartition("/")
        return self.fs.resolve(head or "/"), os.fsencode(name)

    def forget(self, ino: int) -> None:
        if ino not in self.files.values():
            del self.data[ino]


class Workload:
    def __init__(self, fs: FileSystem, rng: random.Random, journal: int) -> None:
        self.fs = fs
        self.rng = rng
        self.m = Model(fs)
        self.journal = journal
        self.seq = 0
        self.orphans: list[int] = []  # open inodes already unlinked
        self.names = 0

    def record(self, obj: dict[str, object]) -> None:
        os.write(self.journal, (json.dumps(obj, sort_keys=True) + "\n").encode())
        os.fsync(self.journal)

    def sync(self) -> None:
        self.seq += 1
        self.record({"seq": self.seq, "phase": "pending", "state": self.m.state()})
        self.fs.sync()
        self.record({"seq": self.seq, "phase": "done"})

    def new_name(self) -> str:
        self.names += 1
        return f"n{self.rng.randrange(1 << 20):x}-{self.names}"

    def payload(self) -> bytes:
        r = self.rng.random()
        size = 0 if r < 0.05 else self.rng.randrange(1, 5000) if r < 0.6 else self.rng.randrange(5000, 70000)
        if self.rng.random() < 0.03:
            size = self.rng.randrange(200_000, 400_000)
        return self.rng.randbytes(size)

    def step(self) -> None:
        m, rng = self.m, self.rng
        ops = [
            "create",
            "write",
            "append",
            "truncate",
            "rename",
            "unlink",
            "mkdir",
            "rmdir",
            "symlink",
            "link",
            "orphan",
            "release",
        ]
        weights = [6, 6, 4, 3, 4, 3, 2, 1, 1, 1, 1, 1]
        if m.total() > TOTAL_BYTES:
            weights = [0, 2, 0, 6, 2, 8, 1, 1, 1, 1, 1, 2]
        if len(m.files) + len(m.links) + len(m.dirs) > TOTAL_NAMES:
            weights = [0, 2, 0, 2, 2, 8, 0, 4, 0, 0, 1, 2]
        getattr(self, "op_" + rng.choices(ops, weights)[0])()
        if rng.random() < 0.2:
            self.sync()

    def pick_file(self) -> str | None:
        return self.rng.choice(sorted(self.m.files)) if self.m.files else None

    def op_create(self) -> None:
        path = f"{self.rng.choice(sorted(self.m.dirs))}/{self.new_name()}"
        parent, name = self.m.lookup(path)
        ino = self.fs.create(parent, name, 0o644)
        data = self.payload()
        self.fs.write(ino, 0, data)
        self.m.files[path] = ino
        self.m.data[ino] = bytearray(data)

    def op_write(self) -> None:
        path = self.pick_file()
        if path is None:
            return
        ino = self.m.files[path]
        content = self.m.data[ino]
        offset = self.rng.randrange(len(content) + 9000)
        data = self.payload()[:50000]
        self.fs.write(ino, offset, data)
        if not data:
            return  # POSIX: writing nothing does not extend the file, even past its end
        if offset > len(content):
            content.extend(bytes(offset - len(content)))
        content[offset : offset + len(data)] = data

    def op_append(self) -> None:
        path = self.pick_file()
        if path is None:
            return
        ino = self.m.files[path]
        data = self.payload()
        self.fs.write(ino, self.fs.stat(ino).size, data)
        self.m.data[ino].extend(data)

    def op_truncate(self) -> None:
        path = self.pick_file()
        if path is None:
            return
        ino = self.m.files[path]
        content = self.m.data[ino]
        size = self.rng.randrange(len(content) + 20000) if self.rng.random() < 0.3 else len(content) // 3
        self.fs.truncate(ino, size)
        if size < len(content):
            del content[size:]
        else:
            content.extend(bytes(size - len(content)))

    def op_rename(self) -> None:
        m, rng = self.m, self.rng
        movable = sorted(m.files) + sorted(m.links) + sorted(d for d in m.dirs if d)
        if not movable:
            return
        src = rng.choice(movable)
        if src in m.dirs:
            dirs = sorted(d for d in m.dirs if d != src and not d.startswith(src + "/"))
            dst = f"{rng.choice(dirs)}/{self.new_name()}"
        elif m.files and rng.random() < 0.4:
            dst = rng.choice(sorted(m.files))  # replacing an existing file
        else:
            dst = f"{rng.choice(sorted(m.dirs))}/{self.new_name()}"
        if dst == src:
            return
        (sp, sn), (dp, dn) = m.lookup(src), m.lookup(dst)
        self.fs.rename(sp, sn, dp, dn)
        if dst in m.files:
            replaced = m.files.pop(dst)
            if src in m.files and m.files[src] == replaced:  # POSIX: renaming a link onto itself is a no-op
                m.files[dst] = replaced
                return
            m.forget(replaced)
        if src in m.dirs:
            moved = [d for d in m.dirs if d == src or d.startswith(src + "/")]
            for d in moved:
                m.dirs.discard(d)
                m.dirs.add(dst + d[len(src) :])
            for p in [p for p in m.files if p.startswith(src + "/")]:
                m.files[dst + p[len(src) :]] = m.files.pop(p)
            for p in [p for p in m.links if p.startswith(src + "/")]:
                m.links[dst + p[len(src) :]] = m.links.pop(p)
        elif src in m.files:
            m.files[dst] = m.files.pop(src)
        else:
            m.links[dst] = m.links.pop(src)

    def op_unlink(self) -> None:
        m = self.m
        victims = sorted(m.files) + sorted(m.links)
        if not victims:
            return
        path = self.rng.choice(victims)
        parent, name = m.lookup(path)
        self.fs.unlink(parent, name)
        if path in m.links:
            del m.links[path]
        else:
            m.forget(m.files.pop(path))

    def op_mkdir(self) -> None:
        path = f"{self.rng.choice(sorted(self.m.dirs))}/{self.new_name()}"
        parent, name = self.m.lookup(path)
        self.fs.mkdir(parent, name)
        self.m.dirs.add(path)

    def op_rmdir(self) -> None:
        m = self.m
        used = {p.rpartition("/")[0] for p in [*m.dirs, *m.files, *m.links] if p}
        empty = sorted(d for d in m.dirs if d and d not in used)
        if not empty:
            return
        path = self.rng.choice(empty)
        parent, name = m.lookup(path)
        self.fs.rmdir(parent, name)
        m.dirs.discard(path)

    def op_symlink(self) -> None:
        path = f"{self.rng.choice(sorted(self.m.dirs))}/{self.new_name()}"
        target = f"../{self.new_name()}/t"
        parent, name = self.m.lookup(path)
        self.fs.symlink(parent, name, target.encode())
        self.m.links[path] = target

    def op_link(self) -> None:
        src = self.pick_file()
        if src is None:
            return
        path = f"{self.rng.choice(sorted(self.m.dirs))}/{self.new_name()}"
        parent, name = self.m.lookup(path)
        self.fs.link(self.m.files[src], parent, name)
        self.m.files[path] = self.m.files[src]

    def op_orphan(self) -> None:
        """Open a file, unlink its last name, and keep writing to it (reclaimed at release or mount)."""
        path = self.pick_file()
        if path is None:
            return
        ino = self.m.files[path]
        if list(self.m.files.values()).count(ino) > 1:
            return
        self.fs.open(ino)
        parent, name = self.m.lookup(path)
        self.fs.unlink(parent, name)
        self.fs.write(ino, 0, self.payload())
        m = self.m
        m.forget(m.files.pop(path))
        self.orphans.append(ino)

    def op_release(self) -> None:
        if self.orphans:
            self.fs.release(self.orphans.pop(self.rng.randrange(len(self.orphans))))


def main(argv: list[str]) -> int:
    image, keyfile, counter, journal, seed, ops = argv
    key = load_image_key(Path(keyfile))
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open_image(Path(image), key, Path(counter)) as fs:
        work = Workload(fs, random.Random(int(seed)), fd)
        print("ready", flush=True)
        for _ in range(int(ops)):
            work.step()
        work.sync()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

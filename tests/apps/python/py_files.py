"""Files and directories in the preopened directory: os.listdir, rename, shutil.rmtree, pathlib, os.walk."""

import os
import shutil
from pathlib import Path

ROOT = Path("/sandbox/work")


def main() -> None:
    ROOT.mkdir()
    (ROOT / "a.txt").write_text("alpha\n")
    (ROOT / "b.bin").write_bytes(bytes(range(256)))
    nested = ROOT / "tree" / "deeper" / "deepest"
    nested.mkdir(parents=True)
    for i in range(3):
        (nested / f"leaf{i}.txt").write_text(f"leaf {i}\n")
    print("listdir", sorted(os.listdir(ROOT)))
    print("sizes", {p.name: p.stat().st_size for p in sorted(ROOT.iterdir()) if p.is_file()})
    os.rename(ROOT / "a.txt", ROOT / "renamed.txt")
    print("after rename", sorted(os.listdir(ROOT)))
    walked = [(Path(d).relative_to(ROOT).as_posix(), sorted(f)) for d, _, f in os.walk(ROOT)]
    print("walk", sorted(walked))
    shutil.rmtree(ROOT / "tree")
    print("after rmtree", sorted(os.listdir(ROOT)))
    shutil.copy(ROOT / "renamed.txt", ROOT / "copy.txt")
    with open(ROOT / "copy.txt", "a") as f:
        f.write("appended\n")
    print("copy", (ROOT / "copy.txt").read_text().splitlines())
    os.replace(ROOT / "copy.txt", ROOT / "renamed.txt")
    print("replace", (ROOT / "renamed.txt").read_text().splitlines())
    try:
        os.rmdir(ROOT)
    except OSError as e:
        print("rmdir non-empty:", type(e).__name__)
    try:
        Path("/sandbox/missing/file.txt").read_text()
    except FileNotFoundError as e:
        print("missing:", e.strerror)
    with open(ROOT / "b.bin", "r+b") as binary:
        binary.seek(10)
        binary.write(b"XYZ")
        binary.seek(-3, os.SEEK_END)
        print("tail", binary.read().hex())
        binary.truncate(16)
    print("truncated", (ROOT / "b.bin").stat().st_size)
    print("exists", os.path.exists("/sandbox/work/renamed.txt"), os.path.isdir("/sandbox/work"))


main()

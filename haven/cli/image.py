"""`haven image ...`: the owner's tools for encrypted disk images (make, list, copy in and out, check, info).

Every command that reads or changes what is inside an image takes ``--key KEYFILE`` (32 bytes: raw, hex or
base64) and uses the image's freshness counter, by default the file ``IMG.counter`` beside the image
(``--counter FILE`` names another). Progress bars go to stderr, and only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from haven.shield.storage.image import Progress

_KEY_HELP = "the image key (32 bytes: raw, hex or base64; haven image keygen makes one)"
_COUNTER_HELP = "the image's freshness counter file (default: IMG.counter beside the image)"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "image",
        help="make, inspect and check encrypted disk images",
        description="The owner's tools for encrypted, integrity- and freshness-protected disk images. "
        "The freshness counter of IMG is the file IMG.counter beside it unless --counter names another.",
    )
    isub = parser.add_subparsers(dest="image_command", metavar="COMMAND", parser_class=type(parser))
    isub.required = True

    p = isub.add_parser(
        "keygen",
        help="make a random 32-byte image key",
        description="Write a fresh random 32-byte image key as hex text, mode 0600.",
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="KEYFILE", help="where to write it")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(handler=_keygen)

    p = isub.add_parser(
        "create",
        help="make a new image, empty or from a directory",
        description="Make a new image of SIZE bytes (64M, 4G, 512MiB, or a number of bytes; a multiple "
        "of 4 KiB) and its freshness counter, optionally filled with a copy of a host directory.",
    )
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("--size", required=True, metavar="SIZE", help="image file size, e.g. 64M, 4G, 512MiB")
    _key_arg(p)
    p.add_argument("--from", dest="from_dir", type=Path, metavar="DIR", help="copy this directory in")
    p.add_argument(
        "--preallocate",
        action="store_true",
        help="write the whole file now, so no commit waits for the host to allocate blocks (faster fsync)",
    )
    _counter_arg(p)
    p.set_defaults(handler=_create)

    p = isub.add_parser(
        "ls", help="list a directory in an image", description="List a directory (or one entry) of an image."
    )
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("path", nargs="?", default="/", metavar="PATH", help="inside the image (default /)")
    _key_arg(p)
    _counter_arg(p)
    p.add_argument("-l", "--long", action="store_true", help="show kind, mode, size and time")
    p.set_defaults(handler=_ls)

    p = isub.add_parser(
        "get",
        help="copy a file or directory tree out of an image",
        description="Copy PATH (a file, symbolic link or directory tree) out of the image to DEST on the "
        "host. If DEST is an existing directory, PATH is copied into it under its own name.",
    )
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("path", metavar="PATH", help="inside the image")
    p.add_argument("dest", type=Path, metavar="DEST", help="on the host")
    _key_arg(p)
    _counter_arg(p)
    p.set_defaults(handler=_get)

    p = isub.add_parser(
        "put",
        help="copy a file or directory tree into an image",
        description="Copy SRC (a host file, symbolic link or directory tree) into the image at PATH, then "
        "commit. If PATH is an existing directory, SRC is copied into it under its own name; missing "
        "parent directories are made; an existing file is replaced.",
    )
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("src", type=Path, metavar="SRC", help="on the host")
    p.add_argument("path", metavar="PATH", help="inside the image")
    _key_arg(p)
    _counter_arg(p)
    p.set_defaults(handler=_put)

    p = isub.add_parser(
        "check",
        help="verify every block and the whole tree",
        description="Verify the superblocks, every block's MAC, the Merkle tree, the freshness counter and "
        "the file system's structure. Exit status 1 with the first fault found.",
    )
    p.add_argument("image", type=Path, metavar="IMG")
    _key_arg(p)
    _counter_arg(p)
    p.set_defaults(handler=_check)

    p = isub.add_parser(
        "info",
        help="describe an image",
        description="Print what the image file shows to anyone (format, size, blocks) and, with --key, "
        "what only the key reveals (image id, version, capacity, usage).",
    )
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument(
        "--key", type=Path, metavar="KEYFILE", help=_KEY_HELP + "; without it, only the public part"
    )
    _counter_arg(p)
    p.set_defaults(handler=_info)


def _key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", type=Path, required=True, metavar="KEYFILE", help=_KEY_HELP)


def _counter_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--counter", type=Path, metavar="FILE", help=_COUNTER_HELP)


def _load_key(path: Path) -> bytes:
    from haven.shield.storage.keys import load_image_key

    return load_image_key(path)


class _Bar:
    """A tqdm bar on stderr; each step gets its own."""

    def __init__(self, factory: Any, label: str, total: int, unit: str) -> None:
        scale = unit == "B"
        self._bar = factory(
            total=total,
            desc=label,
            unit=unit,
            unit_scale=scale,
            unit_divisor=1024 if scale else 1000,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def _progress() -> Progress | None:
    """A progress factory when stderr is a terminal and tqdm is installed; otherwise None (no bars)."""
    if not sys.stderr.isatty():
        return None
    try:
        # Imported by name: bars are optional, and type checking then needs no stubs for tqdm.
        factory = importlib.import_module("tqdm").tqdm
    except ImportError:
        return None

    def make(label: str, total: int, unit: str) -> _Bar:
        return _Bar(factory, label, total, unit)

    return make


def _keygen(args: argparse.Namespace) -> int:
    from haven.shield.storage.image import write_key_file

    write_key_file(args.output, overwrite=args.force)
    print(f"wrote {_shown(str(args.output))}")
    return 0


def _create(args: argparse.Namespace) -> int:
    from haven.shield.storage.image import create_image, parse_size

    size = parse_size(args.size)
    key = _load_key(args.key)
    facts = create_image(
        args.image, size, key, from_dir=args.from_dir, counter_path=args.counter, progress=_progress(),
        preallocate=args.preallocate,
    )
    print(f"wrote {_shown(str(args.image))}")
    _show(facts.rows())
    return 0


def _ls(args: argparse.Namespace) -> int:
    from haven.shield.storage.image import ls, open_image

    key = _load_key(args.key)
    with open_image(args.image, key, args.counter, writable=False) as fs:
        entries = ls(fs, args.path)
    for e in entries:
        if args.long:
            link = f" -> {_shown(e.target)}" if e.target is not None else ""
            print(
                f"{e.kind:<7} {e.mode:04o} {e.nlink:>3} {e.size:>12} {e.mtime_text()}  {_shown(e.name)}{link}"
            )
        else:
            print(_shown(e.name) + ("/" if e.kind == "dir" else ""))
    return 0


def _get(args: argparse.Namespace) -> int:
    from haven.shield.storage.image import get, open_image

    key = _load_key(args.key)
    with open_image(args.image, key, args.counter, writable=False) as fs:
        copied = get(fs, args.path, args.dest, progress=_progress())
    print(f"copied {copied.summary()} to {_shown(str(args.dest))}")
    return 0


def _put(args: argparse.Namespace) -> int:
    from haven.shield.storage.image import open_image, put

    key = _load_key(args.key)
    with open_image(args.image, key, args.counter) as fs:
        copied = put(fs, args.src, args.path, progress=_progress())
        version = fs.sync()
    print(f"copied {copied.summary()} into {_shown(str(args.image))}:{_shown(args.path)}")
    print(f"committed version {version}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from haven.shield.storage.image import check

    key = _load_key(args.key)
    report = check(args.image, key, args.counter, progress=_progress())
    _show(report.rows())
    print(f"{_shown(str(args.image))}: ok")
    return 0


def _info(args: argparse.Namespace) -> int:
    from haven.shield.storage.image import info

    key = _load_key(args.key) if args.key is not None else None
    facts = info(args.image, key, args.counter)
    _show(facts.rows())
    return 0


def _shown(text: str) -> str:
    """A name for the console: bytes that are not UTF-8 (kept as surrogates) shown as escapes."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _show(rows: list[tuple[str, str]]) -> None:
    width = max((len(name) for name, _ in rows), default=0)
    for name, value in rows:
        print(f"{name:<{width}}  {_shown(value)}")

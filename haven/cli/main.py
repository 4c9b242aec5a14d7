"""The `haven` command: one parser, a subcommand per module under haven/cli/."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from haven import __version__
from haven.errors import HavenError

# Each module registers its subcommands; kept as a list so the help lists them in this order.
_COMMAND_MODULES = (
    "haven.cli.bundle",
    "haven.cli.run",
    "haven.cli.image",
    "haven.cli.sim",
    "haven.cli.attest",
    "haven.cli.connect",
    "haven.cli.demo",
)


class UsageError(HavenError):
    exit_code = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="haven", description="Run unmodified WebAssembly applications in an enclave.")
    parser.add_argument("--version", action="version", version=f"haven {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        handler: Handler = args.handler
        return handler(args)
    except HavenError as e:
        print(f"haven: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        # File-system failures on paths the user gave: one line, no traceback.
        where = f": {e.filename}" if e.filename else ""
        print(f"haven: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Exit status: argv and environment in, output on both streams, then sys.exit with a chosen code."""

import os
import sys


def main() -> None:
    print("argv", sys.argv[1:])
    print("env", os.environ.get("APP_MODE"), "HOME" in os.environ)
    print("to stderr", file=sys.stderr)
    code = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sys.stdout.flush()
    sys.exit(code)


main()

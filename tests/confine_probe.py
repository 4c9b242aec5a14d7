"""Run as ``python -m tests.confine_probe FD``: confine this process to descriptor FD, then try what a
confined enclave must not do and what it must still do; report on FD as one JSON object."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import wasmtime
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from haven.shield.confine import confine

WAT = """(module
  (memory (export "memory") 1)
  (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add)
  (func (export "fill") (param i32) (result i32)
    (memory.fill (i32.const 0) (local.get 0) (i32.const 65536))
    (i32.load8_u (i32.const 65535)))
  (func (export "trap") unreachable))"""


def attempt(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    return "allowed"


def main() -> None:
    fd = int(sys.argv[1])
    spare = socket.socket()  # made before confinement: connecting it afterwards must still fail
    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, WAT)  # compiled before; instantiated and run after
    confine(fd)
    report: dict[str, Any] = {
        "open": attempt(lambda: os.open("/etc/hostname", os.O_RDONLY)),
        "socket": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
        "connect": attempt(lambda: spare.connect(("127.0.0.1", 9))),
        "execve": attempt(lambda: os.execv("/bin/true", ["true"])),
        "fork": attempt(os.fork),
        "stdout": attempt(lambda: os.write(1, b"x")),
        "stdin": attempt(lambda: os.read(0, 1)),
        "listdir": attempt(lambda: os.listdir("/")),
        "unlink": attempt(lambda: os.unlink("/tmp/never-there")),
    }
    store = wasmtime.Store(engine)
    instance = wasmtime.Instance(store, module, [])
    exports: Any = instance.exports(store)
    report["wasm_add"] = exports["add"](store, 40, 2)
    report["wasm_fill"] = exports["fill"](store, 7)
    try:
        exports["trap"](store)
        report["wasm_trap"] = "no trap"
    except wasmtime.Trap:
        report["wasm_trap"] = "trapped"
    report["sha256"] = hashlib.sha256(b"abc").hexdigest()
    report["aesgcm"] = AESGCM(bytes(32)).encrypt(bytes(12), b"x", None).hex()
    report["random"] = len(os.urandom(16))
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(1))
    t.start()
    t.join()
    report["thread"] = seen == [1]
    os.write(fd, json.dumps(report).encode())
    os._exit(0)


if __name__ == "__main__":
    main()

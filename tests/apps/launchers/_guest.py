"""Reading and writing a guest's linear memory and calling its exports, for the launchers."""

from __future__ import annotations

import wasmtime


class LauncherError(RuntimeError):
    """The reactor did not have the exports or behaviour its launcher expects."""


class Guest:
    """One instance's exports and memory, with typed helpers."""

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance) -> None:
        self.store = store
        self._exports = instance.exports(store)
        memory = self._exports.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise LauncherError("the module exports no memory")
        self.memory = memory

    def func(self, name: str) -> wasmtime.Func:
        func = self._exports.get(name)
        if not isinstance(func, wasmtime.Func):
            raise LauncherError(f"the module exports no function {name!r}")
        return func

    def call(self, name: str, *params: int) -> int | None:
        result = self.func(name)(self.store, *params)
        if result is None:
            return None
        if not isinstance(result, int):
            raise LauncherError(f"{name} returned {type(result).__name__}, not one i32")
        return result

    def call_i32(self, name: str, *params: int) -> int:
        result = self.call(name, *params)
        if result is None:
            raise LauncherError(f"{name} returned nothing")
        return result

    def write(self, address: int, data: bytes) -> None:
        self.memory.write(self.store, data, address)

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.memory.read(self.store, address, address + length))

    def read_u32(self, address: int) -> int:
        return int.from_bytes(self.read(address, 4), "little")

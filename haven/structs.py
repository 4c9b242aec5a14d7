"""Fixed-layout binary structures, each declared once as a table of fields.

A structure is a dataclass whose fields carry their byte offset and format::

    @dataclass
    class Secinfo(Struct):
        SIZE: ClassVar[int] = 64
        flags: int = field_at(0, "<Q")
        reserved: bytes = field_at(8, "56s", reserved=True)

The table is checked when the class is defined: fields are in offset order, do not overlap, and
cover every byte of ``SIZE`` (reserved areas are declared, not left as gaps). ``from_bytes``
refuses input of the wrong length, and by default any non-zero reserved field; ``to_bytes``
refuses values that do not fit. A field's format is a :mod:`struct` code (integers and ``Ns``
byte strings) or another ``Struct`` subclass, for nested structures such as ATTRIBUTES.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, ClassVar, Self, TypeVar

from haven.errors import FormatError

_T = TypeVar("_T", bound="Struct")


def field_at(offset: int, fmt: str | type[Struct], *, reserved: bool = False) -> Any:
    """Declare a structure field at ``offset`` with ``fmt`` (a struct code or a nested Struct)."""
    if isinstance(fmt, str):
        size = struct.calcsize(fmt)
        default: Any = bytes(size) if fmt.endswith("s") else 0
        return dataclasses.field(
            default=default, metadata={"offset": offset, "fmt": fmt, "size": size, "reserved": reserved}
        )
    nested = fmt
    return dataclasses.field(
        default_factory=nested,
        metadata={"offset": offset, "fmt": nested, "size": nested.SIZE, "reserved": reserved},
    )


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    offset: int
    size: int
    fmt: str | type[Struct]
    reserved: bool


class Struct:
    """Base class: subclasses are dataclasses with ``SIZE`` and fields made by :func:`field_at`."""

    SIZE: ClassVar[int] = 0
    _FIELDS: ClassVar[tuple[_Field, ...]] = ()

    @classmethod
    def _layout(cls) -> tuple[_Field, ...]:
        # Computed lazily (a dataclass decorator runs after __init_subclass__) and cached per class.
        if "_FIELDS" in cls.__dict__:
            return cls._FIELDS
        fields = tuple(
            _Field(f.name, **{k: f.metadata[k] for k in ("offset", "size", "fmt", "reserved")})
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )
        at = 0
        for f in fields:
            if f.offset != at:
                raise TypeError(f"{cls.__name__}.{f.name}: offset {f.offset:#x}, expected {at:#x}")
            at += f.size
        if at != cls.SIZE:
            raise TypeError(f"{cls.__name__}: fields cover {at} bytes, SIZE is {cls.SIZE}")
        cls._FIELDS = fields
        return fields

    @classmethod
    def offset_of(cls, name: str) -> int:
        """Byte offset of field ``name`` (for code that signs or hashes a part of a structure)."""
        for f in cls._layout():
            if f.name == name:
                return f.offset
        raise KeyError(name)

    @classmethod
    def from_bytes(cls, data: bytes, *, strict: bool = True) -> Self:
        """Parse exactly ``SIZE`` bytes; with ``strict``, reserved fields must be zero."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"{cls.__name__}.from_bytes needs bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) != cls.SIZE:
            raise FormatError(f"{cls.__name__}: {len(data)} bytes, expected {cls.SIZE}")
        values: dict[str, Any] = {}
        for f in cls._layout():
            raw = data[f.offset : f.offset + f.size]
            if f.reserved and strict and any(raw):
                raise FormatError(f"{cls.__name__}.{f.name}: reserved bytes are not zero")
            if isinstance(f.fmt, str):
                values[f.name] = struct.unpack(f.fmt, raw)[0]
            else:
                values[f.name] = f.fmt.from_bytes(raw, strict=strict)
        return cls(**values)

    def to_bytes(self) -> bytes:
        out = bytearray(self.SIZE)
        for f in self._layout():
            value = getattr(self, f.name)
            if isinstance(f.fmt, str):
                is_bytes = isinstance(value, (bytes, bytearray))
                if f.fmt.endswith("s") and (not is_bytes or len(value) != f.size):
                    raise FormatError(f"{type(self).__name__}.{f.name}: needs {f.size} bytes")
                try:
                    out[f.offset : f.offset + f.size] = struct.pack(f.fmt, value)
                except struct.error as e:
                    raise FormatError(f"{type(self).__name__}.{f.name}: {e}") from None
            else:
                if not isinstance(value, f.fmt):
                    raise FormatError(f"{type(self).__name__}.{f.name}: needs a {f.fmt.__name__}")
                out[f.offset : f.offset + f.size] = value.to_bytes()
        return bytes(out)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (structures are treated as values)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

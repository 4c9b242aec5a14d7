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
    # The whole table compiled into one little-endian struct.Struct over its flattened leaves, so a
    # structure packs and unpacks in one C call (these sit on hot paths: REPORT, KEYREQUEST, quotes).
    _CODEC: ClassVar[struct.Struct]
    # Per field: (name, byte-string length or -1 for an integer, nested Struct class or None).
    _PLAN: ClassVar[tuple[tuple[str, int, type[Struct] | None], ...]]

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
            if isinstance(f.fmt, str) and not (f.fmt.startswith("<") or f.fmt.endswith("s")):
                raise TypeError(f"{cls.__name__}.{f.name}: format {f.fmt!r} is not little-endian")
            at += f.size
        if at != cls.SIZE:
            raise TypeError(f"{cls.__name__}: fields cover {at} bytes, SIZE is {cls.SIZE}")
        cls._CODEC = struct.Struct("<" + cls._leaf_format(fields))
        cls._PLAN = tuple(
            (f.name, -1, f.fmt) if not isinstance(f.fmt, str)
            else (f.name, f.size if f.fmt.endswith("s") else -1, None)
            for f in fields
        )
        assert cls._CODEC.size == cls.SIZE
        cls._FIELDS = fields
        return fields

    @classmethod
    def _leaf_format(cls, fields: tuple[_Field, ...]) -> str:
        parts = []
        for f in fields:
            if isinstance(f.fmt, str):
                parts.append(f.fmt.lstrip("<"))
            else:
                parts.append(f.fmt._leaf_format(f.fmt._layout()))
        return "".join(parts)

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
        cls._layout()
        if len(data) != cls.SIZE:
            raise FormatError(f"{cls.__name__}: {len(data)} bytes, expected {cls.SIZE}")
        obj, _ = cls._from_leaves(cls._CODEC.unpack(data), 0, strict)
        return obj

    @classmethod
    def _from_leaves(cls, leaves: tuple[Any, ...], at: int, strict: bool) -> tuple[Self, int]:
        values: dict[str, Any] = {}
        for f in cls._layout():
            if isinstance(f.fmt, str):
                value = leaves[at]
                at += 1
                if f.reserved and strict and (value.count(0) != len(value) if f.fmt.endswith("s") else value):
                    raise FormatError(f"{cls.__name__}.{f.name}: reserved bytes are not zero")
            else:
                value, at = f.fmt._from_leaves(leaves, at, strict)
            values[f.name] = value
        return cls(**values), at

    def _leaves(self, out: list[Any]) -> None:
        for name, size, nested in self._PLAN:
            value = getattr(self, name)
            if nested is not None:
                if not isinstance(value, nested):
                    raise FormatError(f"{type(self).__name__}.{name}: needs a {nested.__name__}")
                value._leaves(out)
            elif size >= 0 and (not isinstance(value, (bytes, bytearray)) or len(value) != size):
                # struct pads or cuts a wrong-length byte string silently: refuse it instead.
                raise FormatError(f"{type(self).__name__}.{name}: needs {size} bytes")
            else:
                out.append(value)

    def to_bytes(self) -> bytes:
        self._layout()
        leaves: list[Any] = []
        self._leaves(leaves)
        try:
            return self._CODEC.pack(*leaves)
        except struct.error:
            self._explain_pack_error()
            raise

    def _explain_pack_error(self) -> None:
        """Name the field whose value does not fit (only run once packing has failed)."""
        for f in self._layout():
            value = getattr(self, f.name)
            if isinstance(f.fmt, str):
                try:
                    struct.pack(f.fmt, value)
                except struct.error as e:
                    raise FormatError(f"{type(self).__name__}.{f.name}: {e}") from None
            else:
                value._explain_pack_error()

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (structures are treated as values)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

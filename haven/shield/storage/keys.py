"""The image key: reading it from a key file, and the sub-keys derived from it.

An image has one 32-byte key (AES-256, later released by the key broker). Nothing is encrypted under
it directly: HKDF-SHA256 (RFC 5869), salted with the image id and a random salt drawn at format, derives
one key per role, so data blocks, tree nodes and superblocks never share a key, and two images (or two
formats of one image) under one key share nothing.
"""

from __future__ import annotations

import base64
import binascii
import string
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from haven.errors import KeyFileError

KEY_SIZE = 32
IMAGE_ID_SIZE = 16
FORMAT_SALT_SIZE = 16
KEY_CHECK_SIZE = 16

# HKDF "info" labels (RFC 5869 §3.2: distinct info strings give independent keys). Part of the format.
LABEL_DATA = b"haven storage v1 data"
LABEL_NODE = b"haven storage v1 node"
LABEL_SUPERBLOCK = b"haven storage v1 superblock"
LABEL_KEY_CHECK = b"haven storage v1 key check"

# A key file is a few dozen bytes; anything much larger is not one (and is not read whole).
_MAX_KEY_FILE = 4096
_HEX = frozenset(string.hexdigits.encode())
_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True, repr=False)
class StoreKeys:
    """The sub-keys of one image. ``repr`` is suppressed so a key never reaches a log or traceback."""

    data: bytes
    node: bytes
    superblock: bytes
    key_check: bytes  # not a key: a public check value stored in the superblock header


def derive_keys(image_key: bytes, image_id: bytes, format_salt: bytes) -> StoreKeys:
    """The per-role sub-keys of one format of the image ``image_id`` under ``image_key``. The salt is
    fresh at every format, so even an image formatted again with the same id and key gets new keys
    (and its nonce counter may safely start again from zero)."""
    if len(image_key) != KEY_SIZE:
        raise ValueError(f"an image key is {KEY_SIZE} bytes")
    if len(image_id) != IMAGE_ID_SIZE or len(format_salt) != FORMAT_SALT_SIZE:
        raise ValueError(f"an image id and a format salt are {IMAGE_ID_SIZE} bytes each")
    salt = image_id + format_salt

    def hkdf(label: bytes, length: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=label).derive(image_key)

    return StoreKeys(
        data=hkdf(LABEL_DATA, KEY_SIZE),
        node=hkdf(LABEL_NODE, KEY_SIZE),
        superblock=hkdf(LABEL_SUPERBLOCK, KEY_SIZE),
        key_check=hkdf(LABEL_KEY_CHECK, KEY_CHECK_SIZE),
    )


def parse_image_key(data: bytes, what: str = "image key") -> bytes:
    """The 32-byte key in a key file's contents: exactly 32 raw bytes, or 64 hex digits, or base64
    of 32 bytes (standard or URL-safe alphabet, padded), each optionally surrounded by whitespace.

    Strict on purpose: a key of the wrong length is refused rather than padded, cut or hashed.
    Messages describe the file's shape, never its contents.
    """
    if len(data) == KEY_SIZE and not all(b in _HEX for b in data):
        return bytes(data)
    text = data.strip(_WHITESPACE)
    if not text:
        raise KeyFileError(f"{what}: the file is empty")
    if all(b in _HEX for b in text):
        if len(text) == 2 * KEY_SIZE:
            return bytes.fromhex(text.decode("ascii"))
        raise KeyFileError(
            f"{what}: {len(text)} hex digits; an image key is {KEY_SIZE} bytes ({2 * KEY_SIZE} hex digits)"
        )
    for altchars in (None, b"-_"):
        try:
            key = base64.b64decode(text, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_SIZE:
            return key
        raise KeyFileError(f"{what}: base64 of {len(key)} bytes; an image key is {KEY_SIZE} bytes")
    raise KeyFileError(
        f"{what}: {len(data)} bytes that are neither {KEY_SIZE} raw bytes, nor hex, nor base64"
    )


def load_image_key(path: Path) -> bytes:
    """Read an image key file (see :func:`parse_image_key`); every fault is one ``KeyFileError``."""
    path = Path(path)
    what = f"image key {path}"
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{what}: no such file") from None
    except IsADirectoryError:
        raise KeyFileError(f"{what}: is a directory") from None
    except OSError as e:
        raise KeyFileError(f"{what}: cannot read it ({e.strerror or type(e).__name__})") from None
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{what}: larger than {_MAX_KEY_FILE} bytes, not a key file")
    return parse_image_key(data, what)

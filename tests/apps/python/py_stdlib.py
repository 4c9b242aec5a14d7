"""Imports across the standard library, each used for something whose result is printed."""

import base64
import bisect
import collections
import csv
import dataclasses
import datetime
import decimal
import difflib
import enum
import fractions
import functools
import hashlib
import heapq
import hmac
import io
import itertools
import json
import math
import random
import re
import statistics
import string
import struct
import textwrap
import unicodedata
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
import zlib


class Colour(enum.Enum):
    RED = 1
    GREEN = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


def main() -> None:
    counts = collections.Counter("mississippi")
    print("counter", sorted(counts.items()))
    print("itertools", list(itertools.islice(itertools.accumulate(range(10)), 5)))
    print("functools", functools.reduce(lambda a, b: a * b, range(1, 11)))
    print("re", re.findall(r"\b\w{5}\b", "hello world from wasi land"))
    data = {"b": [1, 2.5, None, True], "a": {"nested": "ü"}}
    print("json", json.dumps(data, sort_keys=True), json.loads('{"k": [1, 2]}'))
    print("math", math.factorial(20), round(math.pi, 10), math.isqrt(10**20))
    decimal.getcontext().prec = 30
    print("decimal", decimal.Decimal(1) / decimal.Decimal(7))
    print("fractions", fractions.Fraction(3, 4) + fractions.Fraction(1, 6))
    print("datetime", datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.UTC).isoformat())
    print("hashlib", hashlib.sha256(b"haven").hexdigest())
    print("hmac", hmac.new(b"key", b"message", "sha256").hexdigest()[:16])
    print("base64", base64.b64encode(b"\x00\xffwasi").decode())
    print("struct", struct.pack("<IHb", 1, 2, -3).hex())
    print("textwrap", textwrap.wrap("the quick brown fox jumps over the lazy dog", 12))
    print("string", string.Template("$who runs $what").substitute(who="wasm", what="python"))
    heap = [5, 1, 4, 2, 3]
    heapq.heapify(heap)
    print("heapq", [heapq.heappop(heap) for _ in range(3)])
    print("bisect", bisect.bisect_left([1, 3, 5, 7], 4))
    rng = random.Random(1234)
    print("random", [rng.randint(0, 100) for _ in range(5)])
    print("statistics", statistics.mean([1, 2, 3, 4]), statistics.median([3, 1, 2]))
    print("enum", Colour.GREEN, Colour(1).name)
    print("dataclasses", Point(1, 2), dataclasses.asdict(Point(3, 4)))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["a", "b,c", 'd"e'])
    print("csv", buf.getvalue().strip())
    print("zlib", zlib.crc32(b"haven"), len(zlib.compress(b"a" * 1000)))
    print("unicodedata", unicodedata.name("λ"), unicodedata.normalize("NFC", "e\u0301") == "é")
    print("urllib", urllib.parse.urlsplit("https://example.com/a/b?x=1#f").path)
    print("uuid", uuid.uuid5(uuid.NAMESPACE_DNS, "haven.example"))
    root = ET.fromstring("<r><i n='1'/><i n='2'/></r>")
    print("xml", [i.get("n") for i in root.iter("i")])
    print("difflib", list(difflib.unified_diff(["a\n", "b\n"], ["a\n", "c\n"], lineterm=""))[2:])


main()

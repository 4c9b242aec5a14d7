"""The manifest: every validation error caught with its dotted path, and a stable canonical form."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from haven.bundle.manifest import Manifest, load_manifest, parse_manifest
from haven.errors import ManifestError
from tests.bundle_helpers import wasm

HELLO = wasm("hello")


def _pem(key: object) -> str:
    pub = key.public_key()  # type: ignore[attr-defined]
    spki = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return str(spki.decode())


@pytest.fixture(scope="module")
def kbs_pem() -> str:
    return _pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.wasm").write_bytes(HELLO)
    return tmp_path


def parse(text: str, base: Path) -> Manifest:
    return parse_manifest(text, base_dir=base)[0]


def error_of(text: str, base: Path) -> str:
    with pytest.raises(ManifestError) as e:
        parse_manifest(text, base_dir=base)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


MINIMAL = '[app]\nmodule = "app.wasm"\n'

FULL = """
# comments and layout are not part of the identity
[app]
module = "app.wasm"
argv = ["app", "--port", "8443"]
env = { GREETING = "hello", LANG = "C.UTF-8" }
stdin = "console"
stdout = "none"
stderr = "console"

[enclave]
product_id = 7
svn = 3
debug = true
memory_limit = "64MiB"
time_limit = "5m"

[[mount]]
guest = "/data"
image = "data"

[[mount]]
guest = "/tmp"
host = "scratch"
untrusted = true
read_only = false

[[mount]]
guest = "/etc/app"
image = "config.v1"
read_only = true

[[listen]]
port = 8443

[[listen]]
port = 9000
tls = "none"

[kbs]
url = "https://kbs.example.net:8443"
public_key = "kbs.pem"
"""


def test_minimal_manifest_gets_defaults(app_dir: Path) -> None:
    m, module = parse_manifest(MINIMAL, base_dir=app_dir)
    assert module == HELLO
    assert m.module.name == "app.wasm" and m.module.size == len(HELLO)
    assert m.module.sha256 == hashlib.sha256(HELLO).digest()
    assert m.argv == ("app.wasm",)
    assert m.env == () and m.mounts == () and m.listeners == () and m.kbs is None
    assert (m.stdin, m.stdout, m.stderr) == ("none", "console", "console")
    assert (m.product_id, m.svn, m.debug) == (0, 0, False)
    assert m.memory_limit == 512 << 20 and m.time_limit == 0


def test_canonical_form_is_exactly_this(app_dir: Path) -> None:
    m = parse(MINIMAL, app_dir)
    digest = hashlib.sha256(HELLO).hexdigest()
    expected = (
        '{"app":{"argv":["app.wasm"],"env":{},"module":{"name":"app.wasm","sha256":"'
        + digest
        + '","size":'
        + str(len(HELLO))
        + '},"stderr":"console","stdin":"none","stdout":"console"},"enclave":{"debug":false,'
        '"memory_limit":536870912,"product_id":0,"svn":0,"time_limit":0},"format":"haven-manifest/1",'
        '"kbs":null,"listen":[],"mount":[]}'
    )
    assert m.canonical_bytes() == expected.encode()


def test_full_manifest(app_dir: Path, kbs_pem: str) -> None:
    (app_dir / "kbs.pem").write_text(kbs_pem)
    m = parse(FULL, app_dir)
    assert m.argv == ("app", "--port", "8443")
    assert m.env == (("GREETING", "hello"), ("LANG", "C.UTF-8"))
    assert (m.stdin, m.stdout, m.stderr) == ("console", "none", "console")
    assert (m.product_id, m.svn, m.debug) == (7, 3, True)
    assert m.memory_limit == 64 << 20 and m.time_limit == 300
    assert [x.guest for x in m.mounts] == ["/data", "/etc/app", "/tmp"]  # sorted
    assert m.mounts[0].encrypted and m.mounts[0].image == "data" and not m.mounts[0].read_only
    assert m.mounts[1].read_only and m.mounts[2].host == "scratch" and m.mounts[2].untrusted
    assert [(x.port, x.tls) for x in m.listeners] == [(8443, "ra-tls"), (9000, "none")]
    assert m.kbs is not None and m.kbs.url == "https://kbs.example.net:8443"
    assert m.kbs.public_key == kbs_pem


def test_canonical_round_trip(app_dir: Path, kbs_pem: str) -> None:
    (app_dir / "kbs.pem").write_text(kbs_pem)
    m = parse(FULL, app_dir)
    data = m.canonical_bytes()
    assert Manifest.from_canonical(data) == m
    assert Manifest.from_canonical(data).canonical_bytes() == data
    assert json.loads(data)["format"] == "haven-manifest/1"


def test_canonical_does_not_depend_on_order_layout_or_location(tmp_path: Path, kbs_pem: str) -> None:
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "build"
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "app.wasm").write_bytes(HELLO)
        (d / "kbs.pem").write_text(kbs_pem)
    reordered = FULL.replace(
        'env = { GREETING = "hello", LANG = "C.UTF-8" }', 'env = { LANG = "C.UTF-8", GREETING = "hello" }'
    )
    # swap the first two mounts and the listeners, and inline the key instead of naming the file
    blocks = reordered.split("\n\n")
    reordered = "\n\n".join(
        [blocks[0], blocks[1], blocks[3], blocks[2], *blocks[4:5], blocks[6], blocks[5], *blocks[7:]]
    )
    reordered = reordered.replace('public_key = "kbs.pem"', f'public_key = """{kbs_pem}"""')
    assert parse(reordered, b).canonical_bytes() == parse(FULL, a).canonical_bytes()


def test_module_path_becomes_a_name(tmp_path: Path) -> None:
    (tmp_path / "out" / "wasm32-wasi").mkdir(parents=True)
    (tmp_path / "out" / "wasm32-wasi" / "app.wasm").write_bytes(HELLO)
    m = parse('[app]\nmodule = "out/wasm32-wasi/app.wasm"\n', tmp_path)
    assert m.module.name == "app.wasm"
    assert str(tmp_path).encode() not in m.canonical_bytes()
    m2 = parse(f'[app]\nmodule = "{tmp_path}/out/wasm32-wasi/app.wasm"\n', Path("/"))
    assert m2.canonical_bytes() == m.canonical_bytes()


def test_every_value_is_in_the_canonical_form(app_dir: Path) -> None:
    base = parse(MINIMAL, app_dir).canonical_bytes()
    for extra in (
        'argv = ["x"]',
        'env = { A = "1" }',
        'stdin = "console"',
        'stdout = "none"',
        'stderr = "none"',
        "[enclave]\nproduct_id = 1",
        "[enclave]\nsvn = 1",
        "[enclave]\ndebug = true",
        '[enclave]\nmemory_limit = "1GiB"',
        '[enclave]\ntime_limit = "1h"',
        '[[mount]]\nguest = "/d"\nimage = "d"',
        "[[listen]]\nport = 80",
    ):
        assert parse(MINIMAL + extra + "\n", app_dir).canonical_bytes() != base, extra


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("65536", 65536),
        ("64KiB", 65536),
        ("1MiB", 1 << 20),
        ("4GiB", 1 << 32),
        ("128 MiB", 128 << 20),
        ("65536B", 65536),
    ],
)
def test_memory_sizes(app_dir: Path, value: str, expected: int) -> None:
    assert parse(f'{MINIMAL}[enclave]\nmemory_limit = "{value}"\n', app_dir).memory_limit == expected


def test_memory_size_as_integer(app_dir: Path) -> None:
    assert parse(f"{MINIMAL}[enclave]\nmemory_limit = 131072\n", app_dir).memory_limit == 131072


@pytest.mark.parametrize(
    ("value", "expected"), [('"0"', 0), ('"30s"', 30), ('"5m"', 300), ('"2h"', 7200), ("45", 45)]
)
def test_durations(app_dir: Path, value: str, expected: int) -> None:
    assert parse(f"{MINIMAL}[enclave]\ntime_limit = {value}\n", app_dir).time_limit == expected


@pytest.mark.parametrize(
    "make",
    [
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ed25519.Ed25519PrivateKey.generate,
    ],
    ids=["p384", "rsa2048", "ed25519"],
)
def test_kbs_key_types(app_dir: Path, make: object) -> None:
    key = make()  # type: ignore[operator]
    m = parse(f'{MINIMAL}[kbs]\nurl = "https://kbs"\npublic_key = """{_pem(key)}"""\n', app_dir)
    assert m.kbs is not None and m.kbs.public_key == _pem(key)


def test_kbs_key_is_stored_as_spki(app_dir: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs1 = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    (app_dir / "kbs.pem").write_bytes(pkcs1)
    m = parse(f'{MINIMAL}[kbs]\nurl = "https://kbs/base"\npublic_key = "kbs.pem"\n', app_dir)
    assert m.kbs is not None and m.kbs.public_key == _pem(key)
    assert m.kbs.public_key.startswith("-----BEGIN PUBLIC KEY-----")


# --- every check, broken once -------------------------------------------------------------------

BAD = {
    "not-toml": ("[app\nmodule = 1", "not valid TOML"),
    "unknown-top-key": (MINIMAL + "[network]\nx = 1\n", "network: unknown key"),
    "typo-in-app": ('[app]\nmodul = "app.wasm"\n', "app.modul: unknown key"),
    "unknown-enclave-key": (MINIMAL + "[enclave]\nsvm = 1\n", "enclave.svm: unknown key"),
    "unknown-mount-key": (
        MINIMAL + '[[mount]]\nguest = "/d"\nimage = "d"\nro = true\n',
        "mount[0].ro: unknown key",
    ),
    "unknown-listen-key": (MINIMAL + "[[listen]]\nport = 1\nproto = 1\n", "listen[0].proto: unknown key"),
    "unknown-kbs-key": (MINIMAL + '[kbs]\nurl = "https://k"\nkey = "k"\n', "kbs.key: unknown key"),
    "no-app": ("[enclave]\nsvn = 1\n", "app: missing"),
    "app-not-table": ("app = 1\n", "app: must be a table"),
    "no-module": ("[app]\nargv = ['a']\n", "app.module: missing"),
    "module-not-string": ("[app]\nmodule = 5\n", "app.module: must be a string"),
    "module-empty": ('[app]\nmodule = ""\n', "app.module: empty path"),
    "module-missing-file": ('[app]\nmodule = "nope.wasm"\n', "app.module: cannot read 'nope.wasm'"),
    "module-directory": ('[app]\nmodule = "."\n', "app.module: '.' is not a regular file"),
    "module-device": ('[app]\nmodule = "/dev/null"\n', "app.module: '/dev/null' is not a regular file"),
    "module-not-wasm": ('[app]\nmodule = "text.wasm"\n', "'text.wasm' is not a WebAssembly module"),
    "module-component": ('[app]\nmodule = "component.wasm"\n', "not a core WebAssembly module"),
    "module-invalid": ('[app]\nmodule = "broken.wasm"\n', "'broken.wasm' is not a valid WebAssembly module"),
    "argv-not-list": (MINIMAL + 'argv = "app"\n', "app.argv: must be an array"),
    "argv-empty": (MINIMAL + "argv = []\n", "app.argv: needs at least 1"),
    "argv-not-string": (MINIMAL + 'argv = ["a", 1]\n', "app.argv[1]: must be a string"),
    "argv-nul": (MINIMAL + 'argv = ["a", "b\\u0000c"]\n', "app.argv[1]: contains a NUL"),
    "env-not-table": (MINIMAL + 'env = ["A=1"]\n', "app.env: must be a table"),
    "env-name-equals": (MINIMAL + 'env = { "A=B" = "1" }\n', "app.env.A=B: an environment variable name"),
    "env-name-empty": (MINIMAL + 'env = { "" = "1" }\n', "an environment variable name must be non-empty"),
    "env-value-not-string": (MINIMAL + "env = { A = 1 }\n", "app.env.A: must be a string"),
    "env-value-nul": (MINIMAL + 'env = { A = "\\u0000" }\n', "app.env.A: contains a NUL"),
    "stdin-choice": (MINIMAL + 'stdin = "file"\n', "app.stdin: must be 'none' or 'console'"),
    "stdout-choice": (MINIMAL + "stdout = true\n", "app.stdout: must be 'console' or 'none'"),
    "enclave-not-table": ("enclave = 3\n" + MINIMAL, "enclave: must be a table"),
    "product-id-range": (
        MINIMAL + "[enclave]\nproduct_id = 65536\n",
        "enclave.product_id: 65536 is out of range 0..65535",
    ),
    "product-id-bool": (MINIMAL + "[enclave]\nproduct_id = true\n", "enclave.product_id: must be an integer"),
    "svn-negative": (MINIMAL + "[enclave]\nsvn = -1\n", "enclave.svn: -1 is out of range"),
    "svn-float": (MINIMAL + "[enclave]\nsvn = 1.0\n", "enclave.svn: must be an integer"),
    "debug-not-bool": (MINIMAL + '[enclave]\ndebug = "yes"\n', "enclave.debug: must be true or false"),
    "memory-unit": (
        MINIMAL + '[enclave]\nmemory_limit = "512MB"\n',
        "enclave.memory_limit: '512MB' is not a size",
    ),
    "memory-garbage": (MINIMAL + '[enclave]\nmemory_limit = "lots"\n', "'lots' is not a size"),
    "memory-pages": (MINIMAL + '[enclave]\nmemory_limit = "100KiB"\n', "not a whole number of 64 KiB"),
    "memory-too-big": (MINIMAL + '[enclave]\nmemory_limit = "8GiB"\n', "is out of range 65536..4294967296"),
    "memory-zero": (MINIMAL + "[enclave]\nmemory_limit = 0\n", "enclave.memory_limit: 0 is out of range"),
    "memory-type": (MINIMAL + "[enclave]\nmemory_limit = [1]\n", "enclave.memory_limit: must be an integer"),
    "time-no-unit": (
        MINIMAL + '[enclave]\ntime_limit = "30"\n',
        "enclave.time_limit: '30' is not a duration",
    ),
    "time-bad-unit": (MINIMAL + '[enclave]\ntime_limit = "5x"\n', "'5x' is not a duration"),
    "time-negative": (MINIMAL + "[enclave]\ntime_limit = -5\n", "enclave.time_limit: -5 is out of range"),
    "time-too-long": (MINIMAL + '[enclave]\ntime_limit = "9000h"\n', "is out of range 0..31536000"),
    "mount-not-array": ("mount = 1\n" + MINIMAL, "mount: must be an array of tables"),
    "mount-not-table": ("mount = [1]\n" + MINIMAL, "mount[0]: must be a table"),
    "mount-no-guest": (MINIMAL + '[[mount]]\nimage = "d"\n', "mount[0].guest: missing"),
    "guest-relative": (
        MINIMAL + '[[mount]]\nguest = "data"\nimage = "d"\n',
        "mount[0].guest: 'data' is not an absolute",
    ),
    "guest-dotdot": (
        MINIMAL + '[[mount]]\nguest = "/a/../b"\nimage = "d"\n',
        "mount[0].guest: '/a/../b' is not normalised",
    ),
    "guest-dot": (MINIMAL + '[[mount]]\nguest = "/a/./b"\nimage = "d"\n', "is not normalised"),
    "guest-trailing-slash": (MINIMAL + '[[mount]]\nguest = "/a/"\nimage = "d"\n', "is not normalised"),
    "guest-double-slash": (MINIMAL + '[[mount]]\nguest = "//a"\nimage = "d"\n', "is not normalised"),
    "guest-duplicate": (
        MINIMAL + '[[mount]]\nguest = "/d"\nimage = "a"\n[[mount]]\nguest = "/d"\nimage = "b"\n',
        "mount[1].guest: '/d' is already mounted by mount[0]",
    ),
    "host-not-untrusted": (
        MINIMAL + '[[mount]]\nguest = "/t"\nhost = "scratch"\n',
        "mark it 'untrusted = true'",
    ),
    "image-and-host": (
        MINIMAL + '[[mount]]\nguest = "/t"\nhost = "s"\nimage = "i"\nuntrusted = true\n',
        "mount[0]: give exactly one of 'image'",
    ),
    "neither-image-nor-host": (MINIMAL + '[[mount]]\nguest = "/t"\n', "mount[0]: give exactly one of"),
    "image-untrusted": (
        MINIMAL + '[[mount]]\nguest = "/t"\nimage = "i"\nuntrusted = true\n',
        "mount[0].untrusted:",
    ),
    "image-name-path": (
        MINIMAL + '[[mount]]\nguest = "/t"\nimage = "../etc/x"\n',
        "mount[0].image: must be a name",
    ),
    "host-name-absolute": (
        MINIMAL + '[[mount]]\nguest = "/t"\nhost = "/var/tmp"\nuntrusted = true\n',
        "mount[0].host: must be a name",
    ),
    "read-only-not-bool": (
        MINIMAL + '[[mount]]\nguest = "/t"\nimage = "i"\nread_only = 1\n',
        "mount[0].read_only: must be true",
    ),
    "port-zero": (MINIMAL + "[[listen]]\nport = 0\n", "listen[0].port: 0 is out of range 1..65535"),
    "port-too-big": (MINIMAL + "[[listen]]\nport = 70000\n", "listen[0].port: 70000 is out of range"),
    "port-string": (MINIMAL + '[[listen]]\nport = "80"\n', "listen[0].port: must be an integer"),
    "port-missing": (MINIMAL + '[[listen]]\ntls = "none"\n', "listen[0].port: missing"),
    "port-duplicate": (
        MINIMAL + "[[listen]]\nport = 80\n[[listen]]\nport = 80\n",
        "listen[1].port: port 80 is already used",
    ),
    "tls-choice": (
        MINIMAL + '[[listen]]\nport = 80\ntls = "tls"\n',
        "listen[0].tls: must be 'ra-tls' or 'none'",
    ),
    "kbs-not-table": ('kbs = "https://k"\n' + MINIMAL, "kbs: must be a table"),
    "kbs-no-url": (MINIMAL + '[kbs]\npublic_key = "k.pem"\n', "kbs.url: missing"),
    "kbs-no-key": (MINIMAL + '[kbs]\nurl = "https://k"\n', "kbs.public_key: missing"),
    "kbs-http": (
        MINIMAL + '[kbs]\nurl = "http://k"\npublic_key = "k.pem"\n',
        "kbs.url: 'http://k' must be an https://",
    ),
    "kbs-no-host": (MINIMAL + '[kbs]\nurl = "https:///x"\npublic_key = "k.pem"\n', "has no host"),
    "kbs-credentials": (
        MINIMAL + '[kbs]\nurl = "https://u:p@k"\npublic_key = "k.pem"\n',
        "must not carry credentials",
    ),
    "kbs-query": (MINIMAL + '[kbs]\nurl = "https://k/?a=1"\npublic_key = "k.pem"\n', "must not have a query"),
    "kbs-bad-port": (MINIMAL + '[kbs]\nurl = "https://k:99999"\npublic_key = "k.pem"\n', "is not a URL"),
    "kbs-space": (MINIMAL + '[kbs]\nurl = "https://k /x"\npublic_key = "k.pem"\n', "white space"),
    "kbs-key-missing-file": (
        MINIMAL + '[kbs]\nurl = "https://k"\npublic_key = "nope.pem"\n',
        "kbs.public_key: cannot read",
    ),
    "kbs-key-not-pem": (
        MINIMAL + '[kbs]\nurl = "https://k"\npublic_key = "text.wasm"\n',
        "kbs.public_key: not a PEM public key",
    ),
    "kbs-key-garbled-inline": (
        MINIMAL
        + '[kbs]\nurl = "https://k"\n'
        + 'public_key = "-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----"\n',
        "kbs.public_key: not a PEM public key",
    ),
    "kbs-key-private": (
        MINIMAL + '[kbs]\nurl = "https://k"\npublic_key = "private.pem"\n',
        "this is a private key",
    ),
    "kbs-key-rsa-small": (
        MINIMAL + '[kbs]\nurl = "https://k"\npublic_key = "rsa1024.pem"\n',
        "RSA key of 1024 bits is too small",
    ),
    "kbs-key-curve": (MINIMAL + '[kbs]\nurl = "https://k"\npublic_key = "k256.pem"\n', "EC curve secp256k1"),
    "kbs-key-dsa": (MINIMAL + '[kbs]\nurl = "https://k"\npublic_key = "dsa.pem"\n', "unsupported key type"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    (d / "app.wasm").write_bytes(HELLO)
    (d / "text.wasm").write_text("hello, I am not WebAssembly\n")
    # A component: the same magic with version 0x0d and layer 1 (component model binary format).
    (d / "component.wasm").write_bytes(b"\0asm\x0d\x00\x01\x00")
    (d / "broken.wasm").write_bytes(HELLO[:-3])
    private = ec.generate_private_key(ec.SECP256R1())
    (d / "private.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (d / "rsa1024.pem").write_text(_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    (d / "k256.pem").write_text(_pem(ec.generate_private_key(ec.SECP256K1())))
    (d / "dsa.pem").write_text(_pem(dsa.generate_private_key(key_size=2048)))
    return d


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_mistake_is_one_clear_error(bad_files: Path, case: str) -> None:
    text, expected = BAD[case]
    message = error_of(text, bad_files)
    assert expected in message, message


def test_load_manifest_names_the_file(app_dir: Path) -> None:
    path = app_dir / "m.toml"
    path.write_text("[app]\nmodule = 3\n")
    with pytest.raises(ManifestError, match=r"m\.toml: app\.module: must be a string"):
        load_manifest(path)


def test_load_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "none.toml")


def test_load_manifest_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_bytes(b'[app]\nmodule = "\xff"\n')
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_manifest(tmp_path / "m.toml")


def test_load_manifest_too_large(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_bytes(b"#" * (2 << 20))
    with pytest.raises(ManifestError, match="larger than"):
        load_manifest(tmp_path / "m.toml")


def test_load_manifest_is_relative_to_its_directory(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (app_dir / "m.toml").write_text(MINIMAL)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    m, module = load_manifest(app_dir / "m.toml")
    assert module == HELLO and m.module.name == "app.wasm"


# --- the canonical reader is strict -------------------------------------------------------------


@pytest.fixture
def canonical(app_dir: Path, kbs_pem: str) -> bytes:
    (app_dir / "kbs.pem").write_text(kbs_pem)
    return parse(FULL, app_dir).canonical_bytes()


def _edit(data: bytes, change: object) -> bytes:
    doc = json.loads(data)
    change(doc)  # type: ignore[operator]
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


NONCANONICAL: dict[str, Callable[[bytes], bytes]] = {
    "spaces": lambda b: b.replace(b'":', b'": '),
    "trailing-newline": lambda b: b + b"\n",
    "unsorted-keys": lambda b: json.dumps(
        {"format": "haven-manifest/1", **json.loads(b)}, separators=(",", ":")
    ).encode(),
    "ascii-escapes": lambda b: (
        json.dumps(json.loads(b), sort_keys=True, separators=(",", ":"))
        .encode()
        .replace(b"GREETING", b"GREETIN\\u0047")
    ),
    "upper-hex": lambda b: b.replace(
        json.loads(b)["app"]["module"]["sha256"].encode(),
        json.loads(b)["app"]["module"]["sha256"].upper().encode(),
    ),
    "unsorted-mounts": lambda b: _edit(b, lambda d: d["mount"].reverse()),
    "unsorted-listeners": lambda b: _edit(b, lambda d: d["listen"].reverse()),
    "pem-not-normalised": lambda b: _edit(
        b, lambda d: d["kbs"].update(public_key=d["kbs"]["public_key"].rstrip("\n"))
    ),
    "negative-zero": lambda b: b.replace(b'"time_limit":300', b'"time_limit":-0').replace(
        b'"svn":3', b'"svn":-0'
    ),
    "duplicate-key": lambda b: b.replace(b'"svn":3', b'"svn":3,"svn":3'),
    "float": lambda b: b.replace(b'"svn":3', b'"svn":3.0'),
    "nan": lambda b: b.replace(b'"svn":3', b'"svn":NaN'),
    "not-utf8": lambda b: b.replace(b"hello", b"hell\xff"),
    "extra-key": lambda b: _edit(b, lambda d: d["enclave"].update(extra=1)),
    "missing-key": lambda b: _edit(b, lambda d: d["app"].pop("stdin")),
    "missing-default": lambda b: _edit(b, lambda d: d.pop("kbs")),
    "wrong-format": lambda b: _edit(b, lambda d: d.update(format="haven-manifest/2")),
    "module-path": lambda b: _edit(b, lambda d: d["app"]["module"].update(name="/home/owner/app.wasm")),
    "module-size-zero": lambda b: _edit(b, lambda d: d["app"]["module"].update(size=0)),
    "bad-guest": lambda b: _edit(b, lambda d: d["mount"][0].update(guest="/a/../b")),
    "no-format": lambda b: _edit(b, lambda d: d.pop("format")),
    "not-an-object": lambda b: b"[]",
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("case", sorted(NONCANONICAL))
def test_from_canonical_refuses(canonical: bytes, case: str) -> None:
    changed = NONCANONICAL[case](canonical)
    assert changed != canonical
    with pytest.raises(ManifestError, match="canonical manifest") as e:
        Manifest.from_canonical(changed)
    assert "\n" not in str(e.value)


def test_from_canonical_refuses_lone_surrogates(canonical: bytes) -> None:
    changed = canonical.replace(b'"argv":["app"', b'"argv":["\\ud800"')
    assert changed != canonical
    with pytest.raises(ManifestError, match=r"app\.argv\[0\]: not valid Unicode"):
        Manifest.from_canonical(changed)


def test_from_canonical_refuses_huge_input() -> None:
    with pytest.raises(ManifestError, match="more than"):
        Manifest.from_canonical(b" " * (2 << 20))

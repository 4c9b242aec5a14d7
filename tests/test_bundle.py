"""Bundles: layout, signing, what is measured, EINIT against tampering, and the hostile-input parser."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from haven.bundle import layout
from haven.bundle.build import (
    ATTRIBUTE_MASK,
    SOURCE_SUFFIXES,
    build_bundle,
    default_code_root,
    default_wasmtime_package,
    enclave_code_archive,
    enclave_code_files,
    enclave_image,
    mrsigner_of_key,
    wasmtime_library,
)
from haven.bundle.container import (
    Bundle,
    encode_bundle,
    parse_bundle,
    read_bundle,
    write_bundle,
)
from haven.bundle.manifest import load_manifest
from haven.errors import BundleError, EnclaveInitError
from haven.tee.sgx.image import EnclaveImage
from haven.tee.sgx.sigstruct import generate_signing_key, mrsigner_of, verify_sigstruct
from haven.tee.sgx.structs import PAGE_SIZE, AttributeFlags, PageType, Secinfo, SecinfoFlags, Tcs
from haven.tee.sim.platform import SimPlatform
from tests.bundle_helpers import make_app, replace_segment, resign, tamper_code_file, tamper_segment, wasm


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_app(tmp_path_factory.mktemp("app"), "[enclave]\nproduct_id = 5\nsvn = 2\n")


@pytest.fixture(scope="module")
def bundle(app: Path, key: rsa.RSAPrivateKey) -> Bundle:
    return build_bundle(app, key)


@pytest.fixture(scope="module")
def encoded(bundle: Bundle) -> bytes:
    return encode_bundle(bundle)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, other_key: rsa.RSAPrivateKey) -> SimPlatform:
    return SimPlatform.create(tmp_path_factory.mktemp("plat") / "platform.json", qe_signing_key=other_key)


# --- building and reading ---------------------------------------------------------------------------


def test_round_trip_through_a_file(bundle: Bundle, tmp_path: Path) -> None:
    write_bundle(bundle, tmp_path / "app.bundle")
    assert os.listdir(tmp_path) == ["app.bundle"]  # no temporary file left behind
    again = read_bundle(tmp_path / "app.bundle")
    assert again == bundle
    assert again.mrenclave() == bundle.sigstruct.enclavehash


def test_contents(bundle: Bundle, app: Path) -> None:
    manifest, module = load_manifest(app)
    assert bundle.module() == module == wasm("hello")
    assert bundle.manifest() == manifest
    assert bundle.segment("manifest") == manifest.canonical_bytes()
    assert bundle.segment("wasmtime") == wasmtime_library().read_bytes()
    assert bundle.segment("haven") == enclave_code_archive()


def test_enclave_code_is_the_enclave_side_only(bundle: Bundle) -> None:
    code = bundle.enclave_code()
    root = default_code_root() / "haven"
    for path in (
        "haven/__init__.py",
        "haven/errors.py",
        "haven/structs.py",
        "haven/tee/sgx/measure.py",
        "haven/bundle/manifest.py",
        "wasmtime/__init__.py",
        "wasmtime/_ffi.py",
    ):
        assert path in code, path
    assert code["haven/errors.py"] == (root / "errors.py").read_bytes()
    for path in code:
        assert not path.startswith(("haven/cli/", "haven/host/", "haven/kbs/", "haven/tee/sim/")), path
        assert "__pycache__" not in path and path.endswith(SOURCE_SUFFIXES)
    assert list(code) == sorted(code)


def test_layout(bundle: Bundle) -> None:
    runs = {r.name: r for r in bundle.image.runs}
    assert [r.name for r in bundle.image.runs] == [
        "tcs",
        "ssa",
        "directory",
        "haven",
        "wasmtime",
        "manifest",
        "module",
        "heap",
    ]
    assert runs["tcs"].offset == 0 and runs["tcs"].secinfo.page_type == PageType.PT_TCS
    assert runs["ssa"].offset == PAGE_SIZE and len(runs["ssa"].data) == 2 * PAGE_SIZE
    assert runs["directory"].offset == 3 * PAGE_SIZE
    assert runs["directory"].secinfo == Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R)
    rx = Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R | SecinfoFlags.X)
    assert runs["haven"].secinfo == rx and runs["wasmtime"].secinfo == rx
    assert runs["module"].secinfo == Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R)
    assert not runs["heap"].measured and all(r.measured for r in bundle.image.runs if r.name != "heap")
    assert runs["heap"].secinfo == Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R | SecinfoFlags.W)
    assert bundle.image.size >= runs["heap"].end and bundle.image.size & (bundle.image.size - 1) == 0
    directory = {s.name: s for s in bundle.directory()}
    module = bundle.segment("module")
    assert directory["module"].length == len(module)
    assert directory["module"].sha256 == hashlib.sha256(module).digest()
    assert directory["heap"].zero_fill


def test_sigstruct(bundle: Bundle, key: rsa.RSAPrivateKey) -> None:
    sig = bundle.sigstruct
    verify_sigstruct(sig)
    assert sig.enclavehash == bundle.image.mrenclave()
    assert (sig.isvprodid, sig.isvsvn) == (5, 2)
    assert mrsigner_of(sig) == hashlib.sha256(sig.modulus).digest() == mrsigner_of_key(key)
    assert not sig.attributes.debug and sig.attributes.flags & AttributeFlags.MODE64BIT
    assert sig.attributemask == ATTRIBUTE_MASK and ATTRIBUTE_MASK.flags & AttributeFlags.DEBUG


def test_debug_manifest_sets_debug(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    b = build_bundle(make_app(tmp_path, "[enclave]\ndebug = true\n"), key)
    assert b.sigstruct.attributes.debug


def test_builds_are_reproducible(app: Path, tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    import datetime

    day = datetime.date(2025, 1, 2)
    first = encode_bundle(build_bundle(app, key, date=day))
    moved = tmp_path / "moved"
    shutil.copytree(app.parent, moved)
    assert encode_bundle(build_bundle(moved / app.name, key, date=day)) == first


# --- everything measured changes MRENCLAVE; nothing else does ------------------------------------------


def _mrenclave(manifest: Path, **kw: Path) -> bytes:
    m, module = load_manifest(manifest)
    return enclave_image(m, module, **kw).mrenclave()


@pytest.fixture(scope="module")
def code_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("code")
    shutil.copytree(
        default_code_root() / "haven", root / "haven", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


@pytest.fixture(scope="module")
def wasmtime_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("wt") / "wasmtime"
    shutil.copytree(default_wasmtime_package(), target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _flip(path: Path, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_copy_of_the_code_measures_the_same(app: Path, code_copy: Path, wasmtime_copy: Path) -> None:
    assert _mrenclave(app, code_root=code_copy, wasmtime_package=wasmtime_copy) == _mrenclave(app)


def test_module_byte_changes_mrenclave(tmp_path: Path, app: Path) -> None:
    other = make_app(tmp_path)
    _flip(tmp_path / "app.wasm", len(wasm("hello")) - 1)  # the last byte of "hello\n" in the data segment
    assert _mrenclave(other) != _mrenclave(app)


@pytest.mark.parametrize(
    "extra",
    [
        "[enclave]\nproduct_id = 6\nsvn = 2\n",
        "[enclave]\nproduct_id = 5\nsvn = 2\ndebug = true\n",
        "[enclave]\nproduct_id = 5\nsvn = 2\n[[listen]]\nport = 80\n",
        'env = { A = "b" }\n[enclave]\nproduct_id = 5\nsvn = 2\n',
    ],
)
def test_manifest_value_changes_mrenclave(tmp_path: Path, app: Path, extra: str) -> None:
    assert _mrenclave(make_app(tmp_path, extra)) != _mrenclave(app)


@pytest.mark.parametrize("file", ["haven/errors.py", "haven/tee/sgx/measure.py", "haven/bundle/container.py"])
def test_haven_code_byte_changes_mrenclave(app: Path, tmp_path: Path, file: str) -> None:
    root = tmp_path / "code"
    shutil.copytree(
        default_code_root() / "haven", root / "haven", ignore=shutil.ignore_patterns("__pycache__")
    )
    _flip(root / file, 10)
    assert _mrenclave(app, code_root=root) != _mrenclave(app)


@pytest.mark.parametrize("name", ["shield/extra.py", "attest/roots/extra.pem", "tee/data.json"])
def test_new_enclave_file_changes_mrenclave(app: Path, tmp_path: Path, name: str) -> None:
    root = tmp_path / "code"
    shutil.copytree(
        default_code_root() / "haven", root / "haven", ignore=shutil.ignore_patterns("__pycache__")
    )
    (root / "haven" / name).parent.mkdir(parents=True, exist_ok=True)
    (root / "haven" / name).write_text("X = 1\n")
    assert f"haven/{name}" in enclave_code_files(root)
    assert _mrenclave(app, code_root=root) != _mrenclave(app)


def test_host_side_code_and_caches_are_not_measured(app: Path, tmp_path: Path) -> None:
    root = tmp_path / "code"
    shutil.copytree(
        default_code_root() / "haven", root / "haven", ignore=shutil.ignore_patterns("__pycache__")
    )
    for side in ("cli", "host", "kbs", "tee/sim"):  # tee/sim is the simulated processor, not enclave code
        (root / "haven" / side).mkdir(exist_ok=True)
        (root / "haven" / side / "changed.py").write_text("X = 2\n")
    (root / "haven" / "tee" / "__pycache__").mkdir()
    (root / "haven" / "tee" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (root / "haven" / "tee" / "notes.txt").write_text("not code")
    assert _mrenclave(app, code_root=root) == _mrenclave(app)


def test_wasmtime_library_byte_changes_mrenclave(app: Path, wasmtime_copy: Path) -> None:
    lib = wasmtime_library(wasmtime_copy)
    assert lib.is_relative_to(wasmtime_copy)
    before = _mrenclave(app, wasmtime_package=wasmtime_copy)
    _flip(lib, 1 << 20)
    try:
        assert _mrenclave(app, wasmtime_package=wasmtime_copy) != before
    finally:
        _flip(lib, 1 << 20)


def test_wasmtime_binding_byte_changes_mrenclave(app: Path, wasmtime_copy: Path) -> None:
    before = _mrenclave(app, wasmtime_package=wasmtime_copy)
    _flip(wasmtime_copy / "_func.py", 5)
    try:
        assert _mrenclave(app, wasmtime_package=wasmtime_copy) != before
    finally:
        _flip(wasmtime_copy / "_func.py", 5)


def test_code_root_without_haven(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not hold the haven package"):
        enclave_code_archive(tmp_path)


def test_wasmtime_package_missing(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not the wasmtime package"):
        enclave_code_archive(wasmtime_package=tmp_path)


def test_module_must_match_manifest(app: Path) -> None:
    m, module = load_manifest(app)
    with pytest.raises(BundleError, match="not the module the manifest names"):
        enclave_image(m, module + b"\0")


# --- EINIT: the platform refuses what was changed after signing -----------------------------------------


def test_einit_accepts_the_bundle(bundle: Bundle, platform: SimPlatform, key: rsa.RSAPrivateKey) -> None:
    enclave = platform.load_enclave(bundle.image, bundle.sigstruct)
    assert enclave.secs.mrenclave == bundle.mrenclave()
    assert enclave.secs.mrsigner == mrsigner_of_key(key)
    assert (enclave.secs.isvprodid, enclave.secs.isvsvn) == (5, 2)


TAMPER: dict[str, Callable[[Bundle], Bundle]] = {
    "module": lambda b: tamper_segment(b, "module", len(b.segment("module")) - 2),
    "manifest": lambda b: replace_segment(
        b, "manifest", b.segment("manifest").replace(b'"svn":2', b'"svn":9')
    ),
    "haven-code": lambda b: tamper_code_file(b, "haven/errors.py", 0),
    "wasmtime-binding": lambda b: tamper_code_file(b, "wasmtime/_ffi.py", 0),
    "wasmtime-library": lambda b: tamper_segment(b, "wasmtime", 4096 * 10 + 7),
    "directory": lambda b: tamper_segment(
        b, "directory", layout.DirectoryHeader.SIZE + layout.DirectoryEntry.offset_of("sha256")
    ),
    "tcs": lambda b: tamper_segment(b, "tcs", Tcs.offset_of("oentry")),
    "ssa": lambda b: tamper_segment(b, "ssa", 100),
}


@pytest.mark.parametrize("what", sorted(TAMPER))
def test_einit_refuses_a_tampered_bundle_that_still_parses(
    bundle: Bundle, platform: SimPlatform, what: str
) -> None:
    tampered = TAMPER[what](bundle)
    reparsed = parse_bundle(encode_bundle(tampered))  # content changes are not structural lies
    assert reparsed == tampered and reparsed.sigstruct == bundle.sigstruct
    assert reparsed.mrenclave() != bundle.sigstruct.enclavehash
    with pytest.raises(EnclaveInitError, match="ENCLAVEHASH"):
        platform.load_enclave(reparsed.image, reparsed.sigstruct)


def test_tampered_manifest_is_still_a_valid_manifest(bundle: Bundle) -> None:
    # The attack is a plausible one: the host offers a well-formed manifest with other values.
    assert TAMPER["manifest"](bundle).manifest().svn == 9


def test_heap_is_not_measured(bundle: Bundle, platform: SimPlatform) -> None:
    heap = bundle.image.run("heap")
    with_junk = Bundle(
        sigstruct=bundle.sigstruct,
        image=EnclaveImage(
            size=bundle.image.size,
            ssaframesize=bundle.image.ssaframesize,
            runs=tuple(
                r
                if r.name != "heap"
                else type(r)(r.offset, b"\xcc" * len(heap.data), r.secinfo, False, "heap")
                for r in bundle.image.runs
            ),
        ),
    )
    assert with_junk.mrenclave() == bundle.mrenclave()
    platform.load_enclave(with_junk.image, with_junk.sigstruct)


def test_einit_refuses_another_signer_claiming_the_enclave(
    bundle: Bundle, platform: SimPlatform, other_key: rsa.RSAPrivateKey
) -> None:
    other = resign(bundle, other_key)
    assert mrsigner_of(other.sigstruct) != mrsigner_of(bundle.sigstruct)
    forged = bundle.sigstruct.replace(modulus=other.sigstruct.modulus)
    with pytest.raises(EnclaveInitError, match="SIGNATURE"):
        platform.load_enclave(bundle.image, forged)


def test_segment_checks_the_directory_hash(bundle: Bundle) -> None:
    tampered = tamper_segment(bundle, "module", 9, consistent=False)
    with pytest.raises(BundleError, match="does not match its hash"):
        tampered.module()


def test_module_must_be_the_one_the_manifest_names(bundle: Bundle) -> None:
    with pytest.raises(BundleError, match="not the module the manifest names"):
        tamper_segment(bundle, "module", 9).module()


def test_manifest_segment_must_be_canonical(bundle: Bundle) -> None:
    with pytest.raises(BundleError, match="bundle manifest: canonical manifest"):
        tamper_segment(bundle, "manifest", 0).manifest()


def test_unknown_segment(bundle: Bundle) -> None:
    with pytest.raises(BundleError, match="no segment 'nope'"):
        bundle.segment("nope")
    with pytest.raises(BundleError, match="zero-filled"):
        bundle.segment("heap")

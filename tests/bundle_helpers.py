"""Test helpers for bundles: the test applications, and tampering with a signed bundle.

The tampering helpers change measured content the way a hostile host or a careless owner would,
keeping the SIGSTRUCT as signed. By default they also keep the bundle internally consistent (the
segment directory's hash is updated to the new content), so that only EINIT — which compares the
measurement with SIGSTRUCT.ENCLAVEHASH — can tell; ``consistent=False`` leaves the directory as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import wasmtime
from cryptography.hazmat.primitives.asymmetric import rsa

from haven.bundle import layout
from haven.bundle.container import Bundle
from haven.tee.sgx.image import EnclaveImage, PageRun, pad_to_pages
from haven.tee.sgx.sigstruct import sign_enclave

APPS = Path(__file__).resolve().parent / "apps"


def wasm(name: str = "hello") -> bytes:
    """A test application from tests/apps/NAME.wat, compiled."""
    return bytes(wasmtime.wat2wasm((APPS / f"{name}.wat").read_text()))


def make_app(directory: Path, extra: str = "", *, module: str = "hello", manifest: str = "app.toml") -> Path:
    """Write ``app.wasm`` and a manifest naming it (plus ``extra`` TOML) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.wasm").write_bytes(wasm(module))
    path = directory / manifest
    path.write_text(f'[app]\nmodule = "app.wasm"\nargv = ["app", "--flag"]\n{extra}')
    return path


def _with_runs(bundle: Bundle, replaced: dict[str, PageRun]) -> Bundle:
    runs = tuple(replaced.get(r.name, r) for r in bundle.image.runs)
    image = EnclaveImage(size=bundle.image.size, ssaframesize=bundle.image.ssaframesize, runs=runs)
    return Bundle(sigstruct=bundle.sigstruct, image=image)


def _directory_with(bundle: Bundle, name: str, length: int, sha256: bytes) -> PageRun:
    segments = [
        dataclasses.replace(s, length=length, sha256=sha256) if s.name == name else s
        for s in bundle.directory()
    ]
    run = bundle.image.run(layout.DIRECTORY)
    return dataclasses.replace(run, data=layout.encode_directory(segments))


def replace_segment(bundle: Bundle, name: str, content: bytes, *, consistent: bool = True) -> Bundle:
    """Put ``content`` in segment ``name`` in place (it must fit the segment's pages), SIGSTRUCT unchanged."""
    run = bundle.image.run(name)
    padded = pad_to_pages(content)
    if len(padded) != len(run.data):
        raise ValueError(f"{len(content)} bytes do not fit the {len(run.data)} bytes of segment {name!r}")
    replaced = {name: dataclasses.replace(run, data=padded)}
    if consistent:
        replaced[layout.DIRECTORY] = _directory_with(
            bundle, name, len(content), hashlib.sha256(content).digest()
        )
    return _with_runs(bundle, replaced)


def tamper_segment(bundle: Bundle, name: str, index: int = 0, *, consistent: bool = True) -> Bundle:
    """Flip one bit of byte ``index`` of a segment's content (or of any run, e.g. "tcs" or "directory")."""
    if name in layout.CONTENT_SEGMENTS:
        content = bytearray(bundle.segment(name))
        content[index] ^= 0x01
        return replace_segment(bundle, name, bytes(content), consistent=consistent)
    run = bundle.image.run(name)
    data = bytearray(run.data)
    data[index] ^= 0x01
    return _with_runs(bundle, {name: dataclasses.replace(run, data=bytes(data))})


def tamper_code_file(bundle: Bundle, archive_path: str, index: int = 0) -> Bundle:
    """Change one byte of one source file inside the enclave code archive (e.g. "haven/errors.py")."""
    from haven.bundle.enclave_code import encode_code_archive

    files = bundle.enclave_code()
    data = bytearray(files[archive_path])
    data[index] ^= 0x01
    files[archive_path] = bytes(data)
    return replace_segment(bundle, layout.CODE, encode_code_archive(files))


def resign(
    bundle: Bundle, key: rsa.RSAPrivateKey, *, isvprodid: int | None = None, isvsvn: int | None = None
) -> Bundle:
    """The same enclave signed by ``key`` (optionally with ISVPRODID/ISVSVN changed)."""
    sig = bundle.sigstruct
    new = sign_enclave(
        key,
        enclavehash=sig.enclavehash,
        attributes=sig.attributes,
        attributemask=sig.attributemask,
        miscselect=sig.miscselect,
        miscmask=sig.miscmask,
        isvprodid=sig.isvprodid if isvprodid is None else isvprodid,
        isvsvn=sig.isvsvn if isvsvn is None else isvsvn,
    )
    return Bundle(sigstruct=new, image=bundle.image)

"""`haven run`: bundles and the development mode, mounts, warnings, exit statuses and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from haven.bundle.build import build_bundle
from haven.bundle.container import read_bundle, write_bundle
from haven.cli.main import main
from haven.libos.modcache import MAC_SIZE, CacheHeader
from haven.shield.storage.image import create_image, open_image
from tests.bundle_helpers import tamper_segment
from tests.sim_helpers import cached_key, make_platform

KEY = bytes(range(32))

# Writes "hi from /data\n" to data/out.txt (preopen fd 3) and to stdout; exits with status 3.
WRITER = r"""(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "out.txt")
  (data (i32.const 16) "\40\00\00\00\0e\00\00\00")
  (data (i32.const 64) "hi from /data\0a")
  (func (export "_start")
    (if (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 7) (i32.const 1)
                    (i64.const 0x3fffffff) (i64.const 0x3fffffff) (i32.const 0) (i32.const 32))
      (then (call $exit (i32.const 9))))
    (drop (call $write (i32.load (i32.const 32)) (i32.const 16) (i32.const 1) (i32.const 40)))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 40)))
    (call $exit (i32.const 3))))"""

# Prints its argv (NUL-separated) and environment to stdout.
ECHO = r"""(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $asz (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $aget (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $esz (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $eget (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $out (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr)) (i32.store (i32.const 4) (local.get $len))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (drop (call $asz (i32.const 16) (i32.const 20)))
    (drop (call $aget (i32.const 1024) (i32.const 4096)))
    (call $out (i32.const 4096) (i32.load (i32.const 20)))
    (drop (call $esz (i32.const 16) (i32.const 20)))
    (drop (call $eget (i32.const 2048) (i32.const 8192)))
    (call $out (i32.const 8192) (i32.load (i32.const 20)))))"""

TRAP = '(module (memory (export "memory") 1) (func (export "_start") unreachable))'
LOOP = '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'


@pytest.fixture(autouse=True)
def _platform(platform_path: Path) -> None:
    make_platform(platform_path)  # a test platform with a cached QE key (no RSA keygen per test)


def module(tmp_path: Path, wat: str, name: str = "app.wasm") -> Path:
    path = tmp_path / name
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path


def run(*argv: str) -> int:
    return main(["run", *argv])


def test_dev_mode_runs_a_module(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    wasm = module(tmp_path, ECHO)
    code = run("--cache-dir", str(tmp_path / "c"), "--env", "K=v a", str(wasm), "one", "two words")
    out, err = capfd.readouterr()
    assert code == 0
    assert out == "app.wasm\0one\0two words\0K=v a\0"
    assert err == (
        "haven: warning: this is a debug enclave: a debugger can read its memory, and no production "
        "policy releases secrets to it\n"
    )


def test_dev_mode_mount_and_exit_status(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    wasm = module(tmp_path, WRITER)
    data = tmp_path / "data"
    data.mkdir()
    assert run("--no-cache", "--mount", f"{data}:/data", str(wasm)) == 3
    out, err = capfd.readouterr()
    assert out == "hi from /data\n"
    assert (data / "out.txt").read_text() == "hi from /data\n"
    assert "haven: warning: /data is the host directory 'mount0': untrusted" in err
    assert "--mount runs the module in this process, unconfined (development only)" in err
    assert len(err.splitlines()) == 3


def test_a_trap_is_one_line_and_134(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert run("--no-cache", str(module(tmp_path, TRAP))) == 134
    err = capfd.readouterr().err.splitlines()
    assert err[-1].startswith("haven: the application trapped: ") and "unreachable" in err[-1]
    assert "Traceback" not in "\n".join(err)


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (["--mount", "nocolon"], "--mount 'nocolon': expected HOSTDIR:GUESTDIR", 2),
        (["--mount", "/tmp:relative"], "the guest directory must be absolute", 2),
        (["--mount", "/nonexistent-dir-xyz:/d"], "is not a directory", 2),
        (["--env", "NOVALUE"], "expected NAME=VALUE", 2),
        (["--image", "d=x.img"], "--image, --image-key, --counter and --dir are for bundles", 2),
    ],
)
def test_dev_mode_refusals(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], argv: list[str], message: str, status: int
) -> None:
    assert run(*argv, str(module(tmp_path, ECHO))) == status
    err = capfd.readouterr().err
    assert message in err and err.count("\n") == 1


def test_neither_module_nor_bundle(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a bundle at all")
    assert run(str(junk)) == 1
    assert run(str(tmp_path / "missing")) == 1
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("haven: error: ") for line in err)


def make_bundle(tmp_path: Path, wat: str, extra: str = "", *, argv: str = '["app"]') -> Path:
    module(tmp_path, wat)
    manifest = tmp_path / "app.toml"
    manifest.write_text(f'[app]\nmodule = "app.wasm"\nargv = {argv}\n{extra}')
    bundle = tmp_path / "app.bundle"
    write_bundle(build_bundle(manifest, cached_key("owner")), bundle)
    return bundle


def test_bundle_with_an_untrusted_directory(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    extra = '[[mount]]\nguest = "/data"\nhost = "scratch"\nuntrusted = true\n'
    bundle = make_bundle(tmp_path, WRITER, extra)
    data = tmp_path / "scratch"
    data.mkdir()
    # A confined enclave process cannot reach a host directory: only --unconfined runs it (here).
    assert run("--no-cache", "--dir", f"scratch={data}", str(bundle)) == 2
    assert "which a confined enclave cannot reach" in capfd.readouterr().err
    assert run("--no-cache", "--unconfined", "--dir", f"scratch={data}", str(bundle)) == 3
    out, err = capfd.readouterr()
    assert out == "hi from /data\n" and (data / "out.txt").is_file()
    assert "/data is the host directory 'scratch': untrusted" in err
    assert "debug enclave" not in err  # a production bundle
    assert run("--no-cache", "--unconfined", str(bundle)) == 1
    assert (
        "the manifest mounts host directory 'scratch' at /data, but the host gave none"
        in capfd.readouterr().err
    )


def test_bundle_with_an_encrypted_image(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path, WRITER, '[[mount]]\nguest = "/data"\nimage = "data"\n')
    image = tmp_path / "data.img"
    create_image(image, 4 << 20, KEY)
    keyfile = tmp_path / "data.key"
    keyfile.write_text(KEY.hex())
    assert run("--no-cache", "--image", f"data={image}", "--image-key", f"data={keyfile}", str(bundle)) == 3
    out, err = capfd.readouterr()
    assert out == "hi from /data\n" and "untrusted" not in err
    with open_image(image, KEY, commit=False) as fs:
        ino = fs.lookup(fs.root, b"out.txt")
        assert fs.read(ino, 0, 100) == b"hi from /data\n"
    assert b"hi from /data" not in image.read_bytes()
    assert run("--no-cache", "--image", f"data={image}", str(bundle)) == 2  # no key
    assert run("--no-cache", str(bundle)) == 1  # no image
    err = capfd.readouterr().err
    assert "give its key with --image-key data=KEYFILE" in err
    assert "the manifest mounts image 'data' at /data, but the host gave no image for it" in err


def test_a_rolled_back_image_is_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path, WRITER, '[[mount]]\nguest = "/data"\nimage = "data"\n')
    image = tmp_path / "data.img"
    create_image(image, 4 << 20, KEY)
    old = image.read_bytes()
    keyfile = tmp_path / "data.key"
    keyfile.write_text(KEY.hex())
    args = ["--no-cache", "--image", f"data={image}", "--image-key", f"data={keyfile}", str(bundle)]
    assert run(*args) == 3
    image.write_bytes(old)  # the host restores the image from before the run
    # The host served a rolled-back image: an attack, on which the enclave fails stop.
    assert run(*args) == 70
    err = capfd.readouterr().err.splitlines()
    assert err[-1].startswith("haven: host violation: storage: mount: ") and "rolled-back" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_a_bundle_takes_no_arguments_from_the_host(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path, ECHO)
    assert run(str(bundle), "--extra") == 2
    assert run("--env", "A=b", str(bundle)) == 2
    assert run("--mount", f"{tmp_path}:/x", str(bundle)) == 2
    err = capfd.readouterr().err
    assert "a bundle's arguments come from its measured manifest; the host cannot add any" in err
    assert "--mount and --env are for a module" in err


def test_a_tampered_bundle_is_refused_by_einit(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path, ECHO)
    write_bundle(tamper_segment(read_bundle(bundle), "module", 30), bundle)
    assert run("--no-cache", str(bundle)) == 1
    err = capfd.readouterr().err
    assert err.startswith("haven: error: ") and err.count("\n") == 1


def test_time_limit_from_the_manifest(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path, LOOP, '[enclave]\ntime_limit = "1s"\n')
    assert run("--no-cache", str(bundle)) == 124
    assert capfd.readouterr().err == "haven: the application exceeded its time limit of 1 s\n"


def test_a_tampered_module_cache_is_detected_and_rebuilt(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle(tmp_path, ECHO, argv='["app", "x"]')
    cache = tmp_path / "cache"
    assert run("--cache-dir", str(cache), str(bundle)) == 0
    (entry,) = cache.iterdir()
    good = entry.read_bytes()
    # The host swaps in native code of its own: a module that traps, compiled by itself.
    evil = wasmtime.Module(wasmtime.Engine(), TRAP).serialize()
    entry.write_bytes(bytes(evil) + good[len(good) - CacheHeader.SIZE - MAC_SIZE :])
    assert run("--cache-dir", str(cache), str(bundle)) == 0  # the genuine module ran
    assert capfd.readouterr().out == "app\0x\0" * 2
    rebuilt = entry.read_bytes()  # recompiled and sealed again (under a fresh salt)
    assert (
        rebuilt[: len(good) - CacheHeader.SIZE - MAC_SIZE] == good[: len(good) - CacheHeader.SIZE - MAC_SIZE]
    )
    assert rebuilt != bytes(evil) + good[len(good) - CacheHeader.SIZE - MAC_SIZE :]

"""`haven demo`: Haven's main job on its embedded defaults.

The owner-to-verifier round trip: generate a signing key, build and sign a bundle for the embedded example
application, predict its MRENCLAVE, launch it on the simulated SGX platform (EINIT), seal a secret, have it
quote a fresh challenge through the quoting enclave, verify the quote and its collateral with Haven's
verifier under a policy that names the predicted identity and trusts the platform's simulation root by
name — and then run the application: the untrusted host process starts the enclave process, which boots,
confines itself and runs the module on the LibOS.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from haven.errors import HavenError


class DemoError(HavenError):
    """A step of the round trip did not give the result it must."""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="sign, measure, launch, quote, verify and run the embedded example on the simulated platform",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", type=Path, help="keep the key, bundle, quote and collateral here")
    parser.add_argument("--platform", type=Path, help="simulated platform file (default: the user's)")
    parser.set_defaults(handler=_run)


@contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="haven-demo-") as tmp:
        yield Path(tmp)


def _step(name: str, started: float) -> None:
    print(f"  {name:<56} {1000 * (time.perf_counter() - started):8.1f} ms")


def _run(args: argparse.Namespace) -> int:
    import wasmtime

    from haven.attest.appraisal import appraise
    from haven.attest.dcap.collateral import load_collateral
    from haven.attest.policy import load_policy
    from haven.attest.verify import resolve_roots, verify_evidence
    from haven.bundle.build import build_bundle
    from haven.bundle.container import read_bundle, write_bundle
    from haven.host.launch import run_bundle
    from haven.shield.confine import seccomp_available
    from haven.tee.sgx.sigstruct import generate_signing_key, mrsigner_of, save_signing_key
    from haven.tee.sim.collateral import platform_collateral
    from haven.tee.sim.pki import root_ca_certificate
    from haven.tee.sim.platform import SimPlatform
    from haven.tee.sim.qe import QuotingEnclave
    from haven.tee.sim.seal import seal, unseal

    examples = resources.files("haven.cli") / "examples"
    with _workdir(args.workdir) as work:
        print(f"Haven demo in {work}")
        t = time.perf_counter()
        key = generate_signing_key()
        save_signing_key(key, work / "signing-key.pem", overwrite=True)
        _step("owner: RSA-3072 (e=3) signing key", t)

        t = time.perf_counter()
        (work / "hello.toml").write_text((examples / "hello.toml").read_text())
        (work / "hello.wasm").write_bytes(wasmtime.wat2wasm((examples / "hello.wat").read_text()))
        bundle = build_bundle(work / "hello.toml", key)
        write_bundle(bundle, work / "hello.bundle")
        _step("owner: build, lay out, measure and sign", t)

        t = time.perf_counter()
        loaded = read_bundle(work / "hello.bundle")
        predicted = loaded.image.mrenclave()
        mrsigner = mrsigner_of(loaded.sigstruct)
        _step("relying party: predict MRENCLAVE from the bundle", t)

        t = time.perf_counter()
        platform = SimPlatform.open(args.platform)
        enclave = platform.load_enclave(loaded.image, loaded.sigstruct)
        if not hmac.compare_digest(enclave.secs.mrenclave, predicted):
            raise DemoError("the launched enclave's MRENCLAVE differs from the prediction")
        _step("host: ECREATE, EADD, EEXTEND, EINIT", t)

        t = time.perf_counter()
        secret = secrets.token_bytes(32)
        blob = seal(enclave, secret, aad=b"haven demo")
        if unseal(enclave, blob) != (secret, b"haven demo"):
            raise DemoError("sealed data did not unseal to what was sealed")
        _step("enclave: seal and unseal a secret (EGETKEY)", t)

        t = time.perf_counter()
        challenge = secrets.token_bytes(32)
        report_data = hashlib.sha256(b"haven demo challenge" + challenge).digest() + bytes(32)
        qe = QuotingEnclave(platform)
        quote = qe.quote(enclave.ereport(qe.target_info(), report_data))
        (work / "hello.quote").write_bytes(quote)
        _step(f"enclave: EREPORT, quote ({len(quote)} bytes, DCAP v3)", t)

        t = time.perf_counter()
        platform_collateral(platform).write_pcs_dir(work / "collateral")
        (work / "sim-root-ca.der").write_bytes(root_ca_certificate(platform).public_bytes(_der()))
        # The relying party's policy: exactly the predicted enclave, this challenge, and the simulation
        # root trusted by name (no policy trusts simulated evidence by default).
        policy_doc = {
            "id": "haven-demo",
            "trusted_roots": [{"name": "haven-simulation", "certificate": "sim-root-ca.der"}],
            "report_data": report_data.hex(),
            "sgx": {
                "mrenclave": predicted.hex(),
                "mrsigner": mrsigner.hex(),
                "isvprodid": 1,
                "min_isvsvn": 1,
            },
        }
        (work / "policy.json").write_text(json.dumps(policy_doc, indent=2) + "\n")
        policy = load_policy(work / "policy.json")
        evidence = verify_evidence(
            quote, collateral=load_collateral(work / "collateral"), roots=resolve_roots(policy)
        )
        result = appraise(evidence, policy)
        result.check()
        _step("verifier: quote, PCK chain, collateral, policy", t)

        t = time.perf_counter()
        confined = seccomp_available()
        out_path = work / "hello.stdout"
        out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            code = run_bundle(work / "hello.bundle", platform=args.platform, confine=confined,
                              console=(None, out, 2))  # fmt: skip
        finally:
            os.close(out)
        if code != 0:
            raise DemoError(f"the application exited with {code}")
        how = "confined by seccomp" if confined else "unconfined: this kernel has no seccomp"
        _step(f"host + enclave processes: run it ({how})", t)

        print()
        for line in out_path.read_text(errors="replace").splitlines():
            print(f"  app says    {line}")
        print(f"  MRENCLAVE   {predicted.hex()}  (predicted = quoted)")
        print(f"  MRSIGNER    {mrsigner.hex()}")
        print(f"  TCB status  {evidence.tcb_status}")
        print(f"  EAR status  {result.status} (simulated hardware is never 'affirming')")
        print("  challenge   bound in report data")
        print("Round trip verified: this quote comes from the enclave the owner signed,")
        print("on a simulated platform (trusted only by policies that name the Haven simulation root).")
    return 0


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER

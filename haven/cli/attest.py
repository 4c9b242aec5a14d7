"""`haven attest verify | token verify | token keygen`: appraise evidence, and sign and check EAR tokens.

- `haven attest verify EVIDENCE [--collateral PATH] [--vek CERT] [--chain PEM] [--crl FILE]...
  [--root CERT]... [--now TIME] [--policy FILE] [--allow-debug] [--report-data HEX] [--json]
  [--ear-key KEY.pem [--ear-out TOKEN]]` verifies SGX/TDX DCAP quotes, SEV-SNP reports and Nitro
  documents, appraises them against the policy (docs/attestation.md) and can sign the EAR.
- `haven attest token keygen -o KEY.pem --jwks JWKS.json` makes an ES256 signing key and its JWK Set.
- `haven attest token verify TOKEN --key JWKS [--now TIME] [--json]` checks an EAR token.

A verdict is one JSON object with `--json` (`verified`, and on failure `error` — the kind of check that
failed — and `message`), else one line; exit status 0 when accepted, 1 when refused, 2 for usage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from haven.errors import HavenError, KeyFileError
from haven.fileio import read_bounded

MAX_INPUT = 8 << 20  # larger than any evidence, certificate, CRL, key set or token
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class AttestUsageError(HavenError):
    """An argument of `haven attest` cannot be used as given."""


def time_arg(text: str) -> datetime.datetime:
    """argparse type for ``--now``: RFC 3339 or Unix seconds (shared by `haven connect`)."""
    from haven.attest.result import parse_time

    try:
        return parse_time(text)
    except HavenError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _report_data(text: str) -> bytes:
    digits = text[2:] if text[:2].lower() == "0x" else text
    if not _HEX.fullmatch(digits) or len(digits) > 128:
        raise argparse.ArgumentTypeError(
            "report data must be 1 to 64 bytes of hex (an even number of digits)"
        )
    return bytes.fromhex(digits)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "attest",
        help="verify attestation evidence; sign and check attestation results",
        description="Verify and appraise attestation evidence (SGX and TDX DCAP quotes, SEV-SNP reports, "
        "AWS Nitro documents); sign and check attestation results (EAR tokens).",
    )
    asub = parser.add_subparsers(dest="attest_command", metavar="COMMAND", parser_class=type(parser))
    asub.required = True

    v = asub.add_parser(
        "verify",
        help="verify and appraise evidence",
        description="Verify EVIDENCE (raw, hex or base64) against pinned vendor roots and its collateral at "
        "--now, then appraise it against --policy. Exit 0 when accepted, 1 when refused.",
    )
    v.add_argument("evidence", type=Path, metavar="EVIDENCE")
    v.add_argument("--collateral", type=Path, metavar="PATH", help="DCAP: dcap-qvl JSON or a PCS directory")
    v.add_argument("--vek", type=Path, metavar="CERT", help="SEV-SNP: the VCEK or VLEK certificate")
    v.add_argument("--chain", type=Path, metavar="PEM", help="SEV-SNP: ASK/ASVK then ARK")
    v.add_argument(
        "--crl", type=Path, action="append", default=[], metavar="FILE", help="SEV-SNP: a CRL (DER/PEM)"
    )
    v.add_argument(
        "--root",
        type=Path,
        action="append",
        default=[],
        metavar="CERT",
        help="trust this root instead of the pinned vendor roots (repeatable; PEM or DER)",
    )
    v.add_argument("--now", type=time_arg, metavar="TIME", help="verify at TIME (RFC 3339 or Unix seconds)")
    v.add_argument("--policy", type=Path, metavar="FILE", help="the appraisal policy (JSON)")
    v.add_argument("--allow-debug", action="store_true", help="accept TEEs in debug mode")
    v.add_argument(
        "--report-data", type=_report_data, metavar="HEX", help="expected report data (zero-padded)"
    )
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.add_argument(
        "--ear-key", type=Path, metavar="KEY.pem", help="sign the attestation result with this key"
    )
    v.add_argument("--ear-out", type=Path, metavar="TOKEN", help="write the signed result here")
    v.set_defaults(handler=_verify)

    token = asub.add_parser(
        "token", help="EAR attestation result tokens", description="EAR tokens (JWT ES256)."
    )
    tsub = token.add_subparsers(dest="token_command", metavar="COMMAND", parser_class=type(parser))
    tsub.required = True
    tv = tsub.add_parser(
        "verify",
        help="check an EAR token",
        description="Check an EAR token's ES256 signature, times and claims.",
    )
    tv.add_argument("token", metavar="TOKEN", help="a file holding the token, or the token itself")
    tv.add_argument("--key", type=Path, required=True, metavar="JWKS", help="the verifier's JWK Set")
    tv.add_argument("--now", type=time_arg, metavar="TIME", help="check at TIME (RFC 3339 or Unix seconds)")
    tv.add_argument("--json", action="store_true", help="print one JSON object")
    tv.set_defaults(handler=_token_verify)
    kg = tsub.add_parser(
        "keygen", help="make an EAR signing key", description="Make an ES256 (P-256) key and its JWK Set."
    )
    kg.add_argument(
        "-o", "--output", type=Path, required=True, metavar="KEY.pem", help="the private key (0600)"
    )
    kg.add_argument("--jwks", type=Path, required=True, metavar="JWKS.json", help="the public JWK Set")
    kg.set_defaults(handler=_keygen)


def _read(path: Path, what: str) -> bytes:
    return read_bounded(path, MAX_INPUT, error=AttestUsageError, what=what)


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically: a reader never sees half a token."""
    if path.is_dir():
        raise AttestUsageError(f"{path} is a directory")
    if not path.parent.is_dir():
        raise AttestUsageError(f"the directory of {path} does not exist")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _refused(kind: str, message: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"verified": False, "error": kind, "message": message}))
    else:
        print(f"haven: error: [{kind}] {message}", file=sys.stderr)
    return 1


def _verify(args: argparse.Namespace) -> int:
    from haven.attest.appraisal import appraise
    from haven.attest.chain import load_certificates, utcnow
    from haven.attest.ear import load_ear_key
    from haven.attest.encoding import decode_evidence
    from haven.attest.errors import AttestationError
    from haven.attest.policy import Policy, load_policy
    from haven.attest.verify import VerifyUsageError, detect_tee, resolve_roots, verify_evidence

    if args.ear_out is not None and args.ear_key is None:
        raise AttestUsageError("--ear-out needs --ear-key to sign the result")
    now: datetime.datetime = args.now or utcnow()
    policy = load_policy(args.policy) if args.policy is not None else Policy.default()
    key = load_ear_key(args.ear_key) if args.ear_key is not None else None
    evidence = _read(args.evidence, "evidence")
    vek = _read(args.vek, "--vek") if args.vek is not None else None
    chain = _read(args.chain, "--chain") if args.chain is not None else None
    crls = [_read(p, "--crl") for p in args.crl]
    roots_data = [(p, _read(p, "--root")) for p in args.root]
    try:
        tee = detect_tee(decode_evidence(evidence))
        if args.collateral is not None and tee not in ("sgx", "tdx"):
            raise VerifyUsageError(f"DCAP collateral (--collateral) does not apply to {tee} evidence")
        given = [c for p, data in roots_data for c in load_certificates(data, f"--root {p}")]
        collateral = None
        if args.collateral is not None:
            from haven.attest.dcap.collateral import load_collateral

            collateral = load_collateral(args.collateral)
        roots = resolve_roots(policy, given)
        verified = verify_evidence(
            evidence, collateral=collateral, vek=vek, chain=chain, crls=crls, roots=roots, now=now
        )
    except AttestationError as e:
        return _refused(e.kind, str(e), args.json)
    appraisal = appraise(
        verified, policy, allow_debug=True if args.allow_debug else None, report_data=args.report_data
    )
    token = _sign(appraisal, key, now) if key is not None else None
    if token is not None and args.ear_out is not None:
        _write(args.ear_out, token.encode() + b"\n")
    if appraisal.problems:
        first = appraisal.problems[0]
        return _refused(first.kind, str(first), args.json)
    _show(appraisal, token if args.ear_out is None else None, args)
    return 0


def _sign(appraisal: Any, key: Any, now: datetime.datetime) -> str:
    from haven.attest.ear import DEFAULT_TTL, ear_claims, sign_ear

    # The result holds no longer than the evidence does: never past the end of its validity window.
    exp = min(now + DEFAULT_TTL, appraisal.evidence.valid_until)
    exp = max(exp, now + datetime.timedelta(seconds=1))
    claims = ear_claims({appraisal.evidence.tee: appraisal.to_ear()}, iat=now, exp=exp, nonce=appraisal.nonce)
    token: str = sign_ear(claims, key)
    return token


def _show(appraisal: Any, token: str | None, args: argparse.Namespace) -> None:
    ev = appraisal.evidence
    ear = {k: v for k, v in appraisal.to_ear().items() if k != "ear.veraison.annotated-evidence"}
    if args.json:
        out = {**ev.to_json(), "ear": ear}
        if token is not None:
            out["ear_token"] = token
        if args.ear_out is not None:
            out["ear_out"] = str(args.ear_out)
        print(json.dumps(out))
        return
    summary = {
        "verified": f"{ev.tee} evidence, chaining to {ev.root}",
        "tcb_status": ev.tcb_status,
        "advisory_ids": ", ".join(ev.advisory_ids) or "none",
        **ev.measurements,
        "report_data": ev.report_data.hex(),
        "debug": "yes" if ev.debug else "no",
        "valid": f"{ev.to_json()['valid_from']} to {ev.to_json()['valid_until']}",
        "ear_status": f"{appraisal.status} (policy {appraisal.policy_id})",
    }
    if args.ear_out is not None:
        summary["ear_token"] = f"written to {args.ear_out}"
    elif token is not None:
        summary["ear_token"] = token
    width = max(map(len, summary))
    for name, value in summary.items():
        print(f"{name:<{width}}  {value}")


def _token_text(arg: str) -> str:
    path = Path(arg)
    if _JWT.fullmatch(arg.strip()):
        return arg.strip()
    if path.is_file():
        return _read(path, "TOKEN").decode("ascii", errors="replace").strip()
    raise AttestUsageError(f"TOKEN {arg!r} is neither a file nor a JWT")


def _token_verify(args: argparse.Namespace) -> int:
    from haven.attest.ear import parse_jwks, verify_ear_token
    from haven.attest.errors import AttestationError

    jwks = parse_jwks(_read(args.key, "--key"), f"key set {args.key}")
    text = _token_text(args.token)
    try:
        result = verify_ear_token(text, jwks, now=args.now)
    except AttestationError as e:
        return _refused(e.kind, str(e), args.json)
    times = {"iat": int(result.iat.timestamp()), "exp": int(result.exp.timestamp()) if result.exp else None}
    if args.json:
        print(
            json.dumps(
                {
                    "verified": True,
                    "status": result.status,
                    "kid": result.kid,
                    **times,
                    "claims": result.claims,
                }
            )
        )
        return 0
    print(f"verified  EAR token signed by {result.kid} ({result.verifier['build']})")
    print(f"status    {result.status}")
    for name, sub in result.submods.items():
        vector = ", ".join(f"{k}={v}" for k, v in sub.vector.items()) or "no claims"
        print(f"submod    {name}: {sub.status} ({vector}; policy {sub.policy_id})")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from haven.attest.ear import generate_ear_key, jwks_of, save_ear_key, thumbprint

    for path, what in ((args.output, "-o"), (args.jwks, "--jwks")):
        if path.exists():
            raise KeyFileError(f"{what} {path} already exists; not overwriting it")
        if not path.parent.is_dir():
            raise KeyFileError(f"the directory of {what} {path} does not exist")
    if args.output.resolve() == args.jwks.resolve():
        raise KeyFileError("-o and --jwks name the same file")
    key = generate_ear_key()
    jwks = json.dumps(jwks_of(key.public_key()), indent=2).encode() + b"\n"
    try:
        with open(args.jwks, "xb") as f:  # never replaces a key set created meanwhile
            f.write(jwks)
    except FileExistsError:
        raise KeyFileError(f"--jwks {args.jwks} already exists; not overwriting it") from None
    try:
        save_ear_key(key, args.output)
    except HavenError:
        args.jwks.unlink(missing_ok=True)  # no key set for a key that was not written
        raise
    print(f"key   {args.output} (ES256, P-256; keep it private)")
    print(f"jwks  {args.jwks} (kid {thumbprint(key.public_key())})")
    return 0

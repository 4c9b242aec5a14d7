"""`haven sim quote | root-ca | collateral`: simulated DCAP quotes and what a verifier needs for them.

- `haven sim quote BUNDLE --report-data HEX -o QUOTE [--collateral-out FILE] [--pcs-dir DIR]` launches
  the bundle on the simulated platform (EINIT), has it EREPORT to the quoting enclave with the report
  data (up to 64 bytes, zero-padded), and writes the DCAP quote v3.
- `haven sim root-ca -o ROOT.der [--pem]` writes the platform's *Haven Simulation Root CA*, the trust
  anchor a verifier must be given explicitly (no production policy trusts it).
- `haven sim collateral -o FILE [--pcs-dir DIR]` writes the collateral: dcap-qvl's QuoteCollateralV3
  JSON, and/or the raw files Intel's PCS serves (names in docs/quotes-and-collateral.md).

Every command takes `--platform PATH` (default: $HAVEN_SIM_PLATFORM, else the user's platform file).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from haven.errors import HavenError

REPORT_DATA_SIZE = 64
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


class SimQuoteError(HavenError):
    """An argument or output path of `haven sim quote/root-ca/collateral` is unusable."""


def _report_data(text: str) -> bytes:
    """--report-data: hex of at most 64 bytes (an optional 0x prefix), zero-padded to 64."""
    digits = text[2:] if text[:2].lower() == "0x" else text
    if not digits:
        raise argparse.ArgumentTypeError("report data is empty; give 1 to 64 bytes as hex")
    if not _HEX.fullmatch(digits):
        raise argparse.ArgumentTypeError("report data must be hex digits, an even number of them")
    data = bytes.fromhex(digits)
    if len(data) > REPORT_DATA_SIZE:
        raise argparse.ArgumentTypeError(
            f"report data is {len(data)} bytes; REPORTDATA holds {REPORT_DATA_SIZE}"
        )
    return data + bytes(REPORT_DATA_SIZE - len(data))


def _platform_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--platform",
        type=Path,
        metavar="PATH",
        help="simulated platform file (default: $HAVEN_SIM_PLATFORM or the user's)",
    )


def register(simsub: Any) -> None:
    quote: argparse.ArgumentParser = simsub.add_parser(
        "quote",
        help="launch a bundle and quote it (DCAP quote v3)",
        description="Launch BUNDLE on the simulated platform, EREPORT it to the quoting enclave and write "
        "the signed DCAP quote version 3.",
    )
    quote.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle made by `haven build`")
    quote.add_argument(
        "--report-data", required=True, type=_report_data, metavar="HEX", help="up to 64 bytes, zero-padded"
    )
    quote.add_argument(
        "-o", "--output", required=True, type=Path, metavar="QUOTE", help="where to write the quote"
    )
    quote.add_argument(
        "--collateral-out", type=Path, metavar="FILE", help="also write dcap-qvl collateral JSON"
    )
    quote.add_argument(
        "--pcs-dir", type=Path, metavar="DIR", help="also write the PCS-format collateral files"
    )
    _platform_arg(quote)
    quote.set_defaults(handler=_quote)

    root = simsub.add_parser(
        "root-ca",
        help="write the simulation root CA certificate",
        description="Write the platform's Haven Simulation Root CA certificate (DER, or PEM with --pem).",
    )
    root.add_argument("-o", "--output", required=True, type=Path, metavar="ROOT", help="where to write it")
    root.add_argument("--pem", action="store_true", help="PEM instead of DER")
    _platform_arg(root)
    root.set_defaults(handler=_root_ca)

    coll = simsub.add_parser(
        "collateral",
        help="write TCB Info, QE Identity and CRLs for the platform",
        description="Issue the platform's collateral, valid for 30 days from now: dcap-qvl QuoteCollateralV3 "
        "JSON (-o) and/or the raw files Intel's PCS serves (--pcs-dir).",
    )
    coll.add_argument("-o", "--output", type=Path, metavar="FILE", help="dcap-qvl QuoteCollateralV3 JSON")
    coll.add_argument("--pcs-dir", type=Path, metavar="DIR", help="directory for the PCS-format files")
    _platform_arg(coll)
    coll.set_defaults(handler=_collateral)


def _check_output_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise SimQuoteError(f"{what} {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise SimQuoteError(f"the directory of {what} {path} does not exist")


def _check_output_dir(path: Path, what: str) -> None:
    if path.exists() and not path.is_dir():
        raise SimQuoteError(f"{what} {path} exists and is not a directory")
    if not path.parent.is_dir():
        raise SimQuoteError(f"the parent directory of {what} {path} does not exist")


def _check_distinct(**paths: Path | None) -> None:
    seen: dict[Path, str] = {}
    for name, path in paths.items():
        if path is None:
            continue
        key = path.resolve()
        if key in seen:
            raise SimQuoteError(f"{name} and {seen[key]} name the same file {path}")
        seen[key] = name


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically, so a reader never sees half a quote."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _quote(args: argparse.Namespace) -> int:
    from haven.bundle.container import read_bundle
    from haven.tee.sim.collateral import platform_collateral
    from haven.tee.sim.platform import SimPlatform
    from haven.tee.sim.qe import QuotingEnclave

    _check_output_file(args.output, "QUOTE")
    if args.collateral_out is not None:
        _check_output_file(args.collateral_out, "--collateral-out")
    if args.pcs_dir is not None:
        _check_output_dir(args.pcs_dir, "--pcs-dir")
    _check_distinct(BUNDLE=args.bundle, QUOTE=args.output, collateral=args.collateral_out)

    bundle = read_bundle(args.bundle)
    platform = SimPlatform.open(args.platform)
    enclave = platform.load_enclave(bundle.image, bundle.sigstruct)
    qe = QuotingEnclave(platform)
    quote = qe.quote(enclave.ereport(qe.target_info(), args.report_data))
    # Everything is computed before anything is written: no partial output on failure.
    collateral = None
    if args.collateral_out is not None or args.pcs_dir is not None:
        collateral = platform_collateral(platform, pki=qe.pki)
    _write(args.output, quote)
    print(f"quote       {args.output} ({len(quote)} bytes, DCAP quote v3)")
    if collateral is not None and args.collateral_out is not None:
        _write(args.collateral_out, collateral.to_dcap_qvl_json().encode())
        print(f"collateral  {args.collateral_out} (dcap-qvl QuoteCollateralV3 JSON)")
    if collateral is not None and args.pcs_dir is not None:
        collateral.write_pcs_dir(args.pcs_dir)
        print(f"collateral  {args.pcs_dir}/ (PCS files)")
    secs = enclave.secs
    print(f"MRENCLAVE   {secs.mrenclave.hex()}")
    print(f"MRSIGNER    {secs.mrsigner.hex()}")
    if secs.attributes.debug:
        print("warning: DEBUG enclave; verifiers refuse its quotes unless debug is allowed")
    return 0


def _root_ca(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.serialization import Encoding

    from haven.tee.sim.pki import root_ca_certificate
    from haven.tee.sim.platform import SimPlatform

    _check_output_file(args.output, "ROOT")
    cert = root_ca_certificate(SimPlatform.open(args.platform))
    _write(args.output, cert.public_bytes(Encoding.PEM if args.pem else Encoding.DER))
    print(f"root CA     {args.output} ({'PEM' if args.pem else 'DER'}): {cert.subject.rfc4514_string()}")
    return 0


def _collateral(args: argparse.Namespace) -> int:
    from haven.tee.sim.collateral import platform_collateral
    from haven.tee.sim.platform import SimPlatform

    if args.output is None and args.pcs_dir is None:
        raise SimQuoteError("haven sim collateral: give -o FILE, --pcs-dir DIR, or both")
    if args.output is not None:
        _check_output_file(args.output, "-o")
    if args.pcs_dir is not None:
        _check_output_dir(args.pcs_dir, "--pcs-dir")
    collateral = platform_collateral(SimPlatform.open(args.platform))
    if args.output is not None:
        _write(args.output, collateral.to_dcap_qvl_json().encode())
        print(f"collateral  {args.output} (dcap-qvl QuoteCollateralV3 JSON)")
    if args.pcs_dir is not None:
        collateral.write_pcs_dir(args.pcs_dir)
        print(f"collateral  {args.pcs_dir}/ (PCS files)")
    return 0

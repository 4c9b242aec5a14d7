"""`haven sim platform init|show|update|tcb`: the simulated SGX platform's data file and configuration."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from haven.errors import PlatformError
from haven.tee.sgx.tcb import TCB_STATUSES
from haven.tee.sim.platform import PlatformConfig, SimPlatform, TcbLevel


def _hex_bytes(size: int) -> Callable[[str], bytes]:
    def parse(text: str) -> bytes:
        try:
            value = bytes.fromhex(text)
        except ValueError:
            value = b""
        if len(value) != size:
            raise argparse.ArgumentTypeError(f"{text!r} is not {2 * size} hex digits")
        return value

    return parse


def _svn(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not an SVN from 0 to 65535")
    return value


def _u32(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 4294967295")
    return value


def _level(text: str) -> TcbLevel:
    """COMPONENTS_HEX:PCESVN:STATUS[:ADVISORY,ADVISORY...]"""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f"{text!r} is not COMPONENTS_HEX:PCESVN:STATUS[:ADVISORY,...]")
    components = _hex_bytes(16)(parts[0])
    pcesvn = _svn(parts[1])
    if parts[2] not in TCB_STATUSES:
        raise argparse.ArgumentTypeError(f"TCB status {parts[2]!r} is not one of {', '.join(TCB_STATUSES)}")
    advisories = tuple(a for a in parts[3].split(",") if a) if len(parts) == 4 else ()
    try:
        return TcbLevel(tuple(components), pcesvn, parts[2], advisories)
    except PlatformError as e:  # a malformed advisory ID
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_platform_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--platform",
        type=Path,
        metavar="PATH",
        help="the platform file (default: $HAVEN_SIM_PLATFORM, else the per-user data directory)",
    )


def register(simsub: Any) -> None:
    parser: argparse.ArgumentParser = simsub.add_parser(
        "platform",
        help="the simulated platform: fused secrets, CPUSVN, TCB levels",
        description="Create, show and configure the simulated SGX platform (its file holds its secrets).",
    )
    sub = parser.add_subparsers(dest="platform_command", metavar="COMMAND", parser_class=type(parser))
    sub.required = True

    init = sub.add_parser("init", help="create a platform with fresh fused secrets")
    _add_platform_arg(init)
    init.add_argument(
        "--force", action="store_true", help="replace an existing platform (loses its sealed data)"
    )
    init.add_argument(
        "--cpusvn", type=_hex_bytes(16), metavar="HEX", help="CPUSVN: 16 component SVNs, 32 hex digits"
    )
    init.add_argument("--pcesvn", type=_svn, metavar="N", help="the PCE's SVN")
    init.add_argument("--qe-svn", type=_svn, metavar="N", help="the quoting enclave's ISVSVN")
    init.add_argument("--fmspc", type=_hex_bytes(6), metavar="HEX", help="FMSPC, 12 hex digits")
    init.set_defaults(handler=_init)

    show = sub.add_parser("show", help="print the platform's configuration (never its secrets)")
    _add_platform_arg(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)

    update = sub.add_parser("update", help="change CPUSVN, PCESVN or the QE's SVN, keeping the secrets")
    _add_platform_arg(update)
    update.add_argument("--cpusvn", type=_hex_bytes(16), metavar="HEX", help="new CPUSVN, 32 hex digits")
    update.add_argument("--pcesvn", type=_svn, metavar="N", help="new PCESVN")
    update.add_argument("--qe-svn", type=_svn, metavar="N", help="new quoting enclave ISVSVN")
    update.set_defaults(handler=_update)

    tcb = sub.add_parser("tcb", help="set the TCB levels the collateral publishes, and PCK revocation")
    _add_platform_arg(tcb)
    tcb.add_argument(
        "--level",
        type=_level,
        action="extend",
        nargs="+",
        metavar="COMPONENTS_HEX:PCESVN:STATUS[:ADVISORY,...]",
        help=f"a TCB level, newest first (statuses: {', '.join(TCB_STATUSES)})",
    )
    revoke = tcb.add_mutually_exclusive_group()
    revoke.add_argument(
        "--revoke-pck", action="store_true", help="list the platform's PCK certificate in the CRL"
    )
    revoke.add_argument("--unrevoke-pck", action="store_true", help="take it off the CRL")
    tcb.add_argument("--evaluation-number", type=_u32, metavar="N", help="tcbEvaluationDataNumber")
    tcb.set_defaults(handler=_tcb)


def _path(args: argparse.Namespace) -> Path:
    return args.platform if args.platform is not None else SimPlatform.default_path()


def _init(args: argparse.Namespace) -> int:
    config = PlatformConfig()
    changes: dict[str, Any] = {}
    for name, value in (
        ("cpusvn", args.cpusvn),
        ("pcesvn", args.pcesvn),
        ("qe_isvsvn", args.qe_svn),
        ("fmspc", args.fmspc),
    ):
        if value is not None:
            changes[name] = value
    if changes:
        # tcb_levels=() again: the default single level follows the platform's own CPUSVN/PCESVN.
        config = dataclasses.replace(config, tcb_levels=(), **changes)
    platform = SimPlatform.create(_path(args), config, overwrite=args.force)
    print(f"created simulated platform {platform.path}")
    _print_summary(platform)
    return 0


def _update(args: argparse.Namespace) -> int:
    if args.cpusvn is None and args.pcesvn is None and args.qe_svn is None:
        raise _usage("haven sim platform update: nothing to change (give --cpusvn, --pcesvn or --qe-svn)")
    platform = SimPlatform.open(_path(args))
    cfg = platform.config
    if args.cpusvn is not None:
        cfg.cpusvn = args.cpusvn
    if args.pcesvn is not None:
        cfg.pcesvn = args.pcesvn
    if args.qe_svn is not None:
        cfg.qe_isvsvn = args.qe_svn
    platform.save()
    print(f"updated simulated platform {platform.path}")
    _print_summary(platform)
    return 0


def _tcb(args: argparse.Namespace) -> int:
    changes = (args.level, args.revoke_pck or None, args.unrevoke_pck or None, args.evaluation_number)
    if all(c is None for c in changes):
        raise _usage(
            "haven sim platform tcb: nothing to change (give --level, --revoke-pck, --unrevoke-pck "
            "or --evaluation-number)"
        )
    platform = SimPlatform.open(_path(args))
    cfg = platform.config
    if args.level is not None:
        cfg.tcb_levels = tuple(args.level)
    if args.revoke_pck or args.unrevoke_pck:
        cfg.pck_revoked = bool(args.revoke_pck)
    if args.evaluation_number is not None:
        cfg.tcb_evaluation_data_number = args.evaluation_number
    platform.save()
    print(f"updated simulated platform {platform.path}")
    _print_summary(platform)
    return 0


def _usage(message: str) -> Exception:
    from haven.cli.main import UsageError

    return UsageError(message)


def _describe(platform: SimPlatform) -> dict[str, Any]:
    """Everything ``show`` prints: configuration and public values only, never a secret."""
    cfg = platform.config
    return {
        "path": str(platform.path),
        "created": platform.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpusvn": cfg.cpusvn.hex(),
        "tcb_components": list(cfg.tcb_components),
        "pcesvn": cfg.pcesvn,
        "pce_id": f"{cfg.pce_id:04x}",
        "fmspc": cfg.fmspc.hex(),
        "qe_isvsvn": cfg.qe_isvsvn,
        "qe_mrsigner": platform.qe_mrsigner().hex(),
        "tcb_status": cfg.tcb_status(),
        "tcb_evaluation_data_number": cfg.tcb_evaluation_data_number,
        "pck_revoked": cfg.pck_revoked,
        "tcb_levels": [lv.to_json() for lv in cfg.tcb_levels],
    }


def _print_summary(platform: SimPlatform) -> None:
    d = _describe(platform)
    rows = (
        ("CPUSVN", d["cpusvn"]),
        ("TCB components", " ".join(str(c) for c in d["tcb_components"])),
        ("PCESVN", d["pcesvn"]),
        ("PCE-ID", d["pce_id"]),
        ("FMSPC", d["fmspc"]),
        ("QE ISVSVN", d["qe_isvsvn"]),
        ("QE MRSIGNER", d["qe_mrsigner"]),
        ("TCB status", d["tcb_status"] or "no TCB level matches this platform"),
        ("TCB eval. number", d["tcb_evaluation_data_number"]),
        ("PCK revoked", "yes" if d["pck_revoked"] else "no"),
    )
    for name, value in rows:
        print(f"  {name:<17} {value}")
    print("  TCB levels (newest first):")
    for lv in d["tcb_levels"]:
        comps = bytes(lv["sgx_components"]).hex()
        advisories = ",".join(lv["advisory_ids"]) or "-"
        print(f"    {comps}:{lv['pcesvn']} {lv['status']:<34} {advisories}")


def _show(args: argparse.Namespace) -> int:
    platform = SimPlatform.open(_path(args))
    if args.json:
        print(json.dumps(_describe(platform), indent=2))
        return 0
    print(f"simulated platform {platform.path}")
    print(f"  {'created':<17} {platform.created.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    _print_summary(platform)
    return 0

"""`haven sim ...`: the simulated SGX platform (its data file, quotes, its root CA and collateral)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from haven.cli import sim_platform, sim_quote

    parser: argparse.ArgumentParser = sub.add_parser(
        "sim", help="the simulated SGX platform", description="The simulated SGX platform."
    )
    simsub = parser.add_subparsers(dest="sim_command", metavar="COMMAND", parser_class=type(parser))
    simsub.required = True
    sim_platform.register(simsub)
    sim_quote.register(simsub)

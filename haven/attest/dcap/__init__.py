"""Intel DCAP attestation: SGX and TDX quotes, their collateral, and TCB evaluation.

`verify_dcap(quote, collateral, roots=..., now=...)` is the entry point; `load_collateral(path)` reads
dcap-qvl JSON or a directory of Intel PCS responses. Format and check order: docs/attestation-dcap.md.
"""

from haven.attest.dcap.cache import clear_caches
from haven.attest.dcap.collateral import (
    Collateral,
    collateral_from_parts,
    load_collateral,
    load_pcs_directory,
    parse_collateral_json,
    to_dcap_qvl_json,
)
from haven.attest.dcap.pck import PckExtension, parse_pck_extension, pck_extension_of
from haven.attest.dcap.quote import DcapQuote, TdReport10, TdReport15, parse_quote
from haven.attest.dcap.verify import check_quote_signatures, default_roots, load_pck_chain, verify_dcap

__all__ = [
    "Collateral",
    "DcapQuote",
    "PckExtension",
    "TdReport10",
    "TdReport15",
    "check_quote_signatures",
    "clear_caches",
    "collateral_from_parts",
    "default_roots",
    "load_collateral",
    "load_pck_chain",
    "load_pcs_directory",
    "parse_collateral_json",
    "parse_pck_extension",
    "parse_quote",
    "pck_extension_of",
    "to_dcap_qvl_json",
    "verify_dcap",
]

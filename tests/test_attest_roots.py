"""Pinned vendor certificates shipped with Haven."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from haven.attest import roots
from haven.attest.chain import load_certificates, verify_chain
from haven.errors import HavenError


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def test_amd_arks_match_the_kds_chains(vectors):
    snp = vectors / "snp" / "go-sev-guest"
    for product, name in (
        ("Milan", "ask_ark_milan.pem"),
        ("Genoa", "ask_ark_genoa.pem"),
        ("Turin", "ask_ark_turin_vcek.pem"),
    ):
        ask, ark = load_certificates((snp / name).read_bytes(), name)
        assert roots.amd_ark(product) == ark
        assert roots.amd_signing_ca(product) == ask
        assert ark.subject.rfc4514_string().startswith(f"CN=ARK-{product},")
        # each intermediate is signed by its ARK
        for vlek in (False, True):
            ca = roots.amd_signing_ca(product, vlek=vlek)
            assert verify_chain([ca], [roots.amd_ark(product)], now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert (
        _fingerprint(roots.amd_ark("Milan"))
        == "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
    )
    turin_chain = (vectors / "snp" / "virtee-sev" / "cert_chain_turin").read_bytes()
    assert load_certificates(turin_chain, "turin")[1] == roots.amd_ark("turin")  # a second, independent copy


def test_vlek_intermediates(vectors):
    snp = vectors / "snp" / "go-sev-guest"
    for product in ("milan", "genoa", "turin"):
        asvk, ark = load_certificates((snp / f"ask_ark_{product}_vlek.pem").read_bytes(), product)
        assert roots.amd_signing_ca(product, vlek=True) == asvk
        assert roots.amd_ark(product) == ark
    assert len(set(roots.amd_intermediates())) == 6
    assert len(set(roots.amd_arks())) == 3


def test_aws_and_intel_roots(vectors):
    aws = roots.aws_nitro_root()
    assert (
        _fingerprint(aws) == "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    )  # LAYOUTS §7
    vendored = (vectors / "nitro" / "blocky-nitrite" / "aws_nitro_root_g1.pem").read_bytes()
    assert load_certificates(vendored, "aws") == [aws]
    intel = roots.intel_sgx_root()
    der = (vectors / "sgx" / "dcap-qvl" / "TrustedRootCA.der").read_bytes()
    assert load_certificates(der, "intel") == [intel]
    assert (
        intel.subject.rfc4514_string() == "C=US,ST=CA,L=Santa Clara,O=Intel Corporation,CN=Intel SGX Root CA"
    )
    assert intel.not_valid_after_utc.year == 2049


@pytest.mark.parametrize("name", ["Milan-B0", "milan", "GENOA", " Turin-B1 "])
def test_product_names(name):
    assert roots.amd_product(name) in roots.AMD_PRODUCTS


@pytest.mark.parametrize("name", ["Naples", "Rome", "", "-Milan"])
def test_unknown_products(name):
    with pytest.raises(roots.UnknownProductError) as e:
        roots.amd_ark(name)
    assert isinstance(e.value, HavenError)


def test_a_swapped_file_is_refused(monkeypatch):
    # The ARK files are checked against their pinned fingerprint: put Genoa's where Milan's is expected.
    monkeypatch.setitem(roots._FINGERPRINTS, "amd_ark_milan.pem", roots._FINGERPRINTS["amd_ark_genoa.pem"])
    roots._load.cache_clear()
    try:
        with pytest.raises(roots.RootStoreError):
            roots.amd_ark("Milan")
    finally:
        roots._load.cache_clear()

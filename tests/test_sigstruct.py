"""SIGSTRUCT signing and EINIT's checks of it, the published vector, and signing-key files.

Published vector
----------------
Repository fortanix/rust-sgx, file ``sgxs-tools/src/bin/sgxs-sign.rs`` at commit
488d23d1473b5d52dc05596f8cd30ca6d81d6d01, test ``test_sig``: the 1808-byte SIGSTRUCT that
``sgxs-sign -x 3/0xe4 --date 20160109 --in-hash <ENCLAVEHASH>`` produces with an RSA-3072,
exponent-3 sample key that many SGX projects ship. That key's MRSIGNER, 83d719e7…ce9e, is quoted
independently in other projects' test data (as the MRSIGNER of their sample-signed enclaves, and in
a test that hashes the key's PEM public key). The bytes below are ``test_sig``'s ``SIGSTRUCT``
constant, in hex; no private key is needed to check them.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from haven.errors import EnclaveInitError, FormatError, KeyFileError
from haven.tee.sgx.sigstruct import (
    bcd_date,
    generate_signing_key,
    load_signing_key,
    mrsigner_of,
    save_signing_key,
    sign_enclave,
    verify_sigstruct,
)
from haven.tee.sgx.structs import (
    SIGSTRUCT_HEADER,
    SIGSTRUCT_HEADER2,
    AttributeFlags,
    Attributes,
    Sigstruct,
)

PUBLISHED_SIGSTRUCT = bytes.fromhex(
    "06000000e100000000000100000000000000000009011620010100006000000060000000010000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000f357fd12f0287bd924ae74d602136d1b"
    "50565bc764d591d42f1866200bd671034df1e6b253d63e12046ad0b558d69bd422b7f8248723465c9bb771285659b4c9"
    "dc9f7070079134dab01f013e772322334cd72f10156243859cd6444ef1609496772b94928970ffb7e2957ae483c72a36"
    "dd223ebf9cf1eb95ff5b03f959676baab18c2aefa0c523f711775cbba872793cb35249f5ab69b248f4e6d73807afb920"
    "d2b44d616bde4ab42e0f7aa412d3ab719c55ee37c4bd0192cbcac055c80665b655d5776b014ef53d872639dfdb4e6210"
    "9aa839771936bd0cb5b79e5bfb5f6deb71bbf28b165ba5091a0a4f3703e0c946be379e2f6dc39e74271d439ceb531bc2"
    "06bbe0b85ff34e22667df2d5b7401e192f41e327b1a7a8f6f2d36cc757fc64e7094996462b133ece8c4c376689f72223"
    "f0258365cf987c985d279adf3e2b20fcc0978f171330ab0a596f713033c1ca22230a72bf00997e81c86e6602d9a2d694"
    "ae95418d1f5e6a32d6f946252d9366d2e925d915178f6543f6fd23fb82a883ae03000000bc956cd827084b1b697cee40"
    "8a0384c51413e71b5f38231364ad78990ea68a36e585039ecbf070418d3691fa502dee2aa6c84692b289e3ec19bb2203"
    "5158c0da4ff8730fa5791f972bab1ff1a0ebea40cf32fc2dd89fa6157fa559c446709b8b77c3dc322c7210f39c0382b3"
    "930092bc026901f444cabefd12f19d288f6f9ab891683ec52d6968852dcd83a0273f372e3654fa160ccafbdb18e32de5"
    "a2eb3fffcf04db3896b924301b7a336439f2e54993d04106d94d0980ba98012279a9ae48af8dd509c19a8d294f37904c"
    "191a93301ecfda7aef5c54c07cd3c04a2c322b15605f85f7ff3276eceafa614501c5c7c112c9d4400c10d83a87c6ad1e"
    "b16ad34d1a784fab70925df8c3476e9e23c39dd8a439218422d8137400e3fb521ce7d5f063301680d87bf98ddf55e007"
    "2b98cb66d7940ac949ebf4cf7ce5debda44e74a2c9c55b4818d4ff841b3ef5ec981be2899cc2199307f675c05b49f681"
    "6818c22bdb2314deb5e71e5875da3aa5a8fe123d8ee03e76c7d3f809d9da58f1cc440e2000000000ffffffff00000000"
    "0000000000000000000000000000000004000000000000000300000000000000fdffffffffffffff1bffffffffffffff"
    "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d00000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000e6853e7259fc1c2c2490a6a19661d080"
    "69eb8bf9f73eac739fc9677899e4b0908becd2a7576a40797283688f8f213375a9e0d66d8d1e05f102bc7076cdba227b"
    "46870e42eb5bb4852b3b8f7e3ee52f4719c5b4b9abcb760fbf125646707b32e67a1a798fb65ecf0bd4ca8efe506de376"
    "08871accf67ceda9a85270cbc4e7c3d4bd6edb5f4e7468c1e0118d6dae9722ed5f852b7ef854bf5d5dc1ff4e06e37720"
    "1e6f672857fc8cdb9cce21f91cd322bc7188a441a0d10b869a65282ee27a3731242649ef0c750126348c91b939d92fc2"
    "bb45564306d004e059f2116f35d796b45a7c351a58dea4769d54f20174737e6110594c99f690a6eff7577b032ace385a"
    "8e0fd71e425e9536b34781a1c6dde9052d805e51d3193970fca9269afddcb7890ba0d0a1c66f949f70cf8c97a42d82cd"
    "ef7121c24b80d55e3313283de0e9b10d56e5bb6e4ad2eebd8aa261d140b3bc204c9b1f6225f1ef8a9eb6597135699514"
    "f06a91473f574be4762ca357e8bcc0d24699f1a346ed90b33f3d41ce4a5fe30501879b63817dae48959c24946c3f8222"
    "4c100ec8cfda7b70621ef58736ddad4177052065f23f0d2835fb42d78d547c09d2b94cb0ac0f2a5114ef3a29b03962f4"
    "65ae46a17e4ca72508d71ecfc24e34677128f53c151e057548ce180f3b3dfdc62c1bafd833f29cc6b2c3ec25f09801b0"
    "9e5a8f02557c0929671a7b64d6a7dffa570cf5b8fb1dee598fa7050be29d6a9c58c74c1c98d0c41b494016eed7e5f544"
    "253e70ac09c0311d574ca861e4c732bfab9d39e07cce2cf2ed4f9af09572d1d812a7d925d01dd20ca14b2b639253f761"
    "adf5c37ed5d7f069e0af8f2e7f12ad55275a50699a5d6ba8bed6142157728348cbfe8090f7f5e6934b0cdeedffd077a4"
    "c3b236506a792363ac77bb39394a1a7ce99b29ebb21a326abc39958404a20522055bd963bebef42cab8edebefedb6b66"
    "f7b0c00c295809b033e6bb57d05f0a69b7933d721f6beb946f6f41ef4216822f5ea5e857bb3b64e7647981bb8fb5f7b0"
    "d16b2b7e56aff85802c55c09ebfcb5c0c390fa2dc59ed6b6afd1bd841d3ce904"
)
PUBLISHED_MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
PUBLISHED_ENCLAVEHASH = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"

# The fields sgxs-sign gave that SIGSTRUCT (-x 3/0xe4: XFRM 3, XFRM mask ~0xe4; default flags).
PUBLISHED_PARAMS: dict[str, Any] = {
    "enclavehash": bytes.fromhex(PUBLISHED_ENCLAVEHASH),
    "attributes": Attributes(flags=AttributeFlags.MODE64BIT, xfrm=0x3),
    "attributemask": Attributes(flags=~int(AttributeFlags.DEBUG) & (2**64 - 1), xfrm=~0xE4 & (2**64 - 1)),
    "miscselect": 0,
    "miscmask": 0xFFFFFFFF,
    "isvprodid": 0,
    "isvsvn": 0,
    "date": datetime.date(2016, 1, 9),
}
KEY_FIELDS = ("modulus", "signature", "q1", "q2")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def signed(key: rsa.RSAPrivateKey) -> Sigstruct:
    return sign_enclave(
        key,
        enclavehash=bytes(range(32)),
        attributes=Attributes(flags=AttributeFlags.MODE64BIT | AttributeFlags.DEBUG, xfrm=0x3),
        attributemask=Attributes(flags=2**64 - 1, xfrm=2**64 - 1),
        miscselect=1,
        miscmask=0xFFFFFFFF,
        isvprodid=7,
        isvsvn=513,
        date=datetime.date(2024, 12, 31),
        vendor=0,
        swdefined=0xA5A5A5A5,
        isvfamilyid=bytes(range(16, 32)),
        isvextprodid=bytes(range(32, 48)),
    )


# --- the published vector ---------------------------------------------------------------------


def test_published_sigstruct_verifies() -> None:
    verify_sigstruct(Sigstruct.from_bytes(PUBLISHED_SIGSTRUCT))


def test_published_sigstruct_mrsigner() -> None:
    assert mrsigner_of(Sigstruct.from_bytes(PUBLISHED_SIGSTRUCT)).hex() == PUBLISHED_MRSIGNER


def test_published_sigstruct_fields() -> None:
    sig = Sigstruct.from_bytes(PUBLISHED_SIGSTRUCT)
    assert sig.header == SIGSTRUCT_HEADER and sig.header2 == SIGSTRUCT_HEADER2
    assert sig.date == 0x20160109 == bcd_date(datetime.date(2016, 1, 9))
    assert sig.exponent == 3 and sig.vendor == 0
    assert sig.enclavehash.hex() == PUBLISHED_ENCLAVEHASH
    assert sig.attributes == PUBLISHED_PARAMS["attributes"]
    assert sig.attributemask == PUBLISHED_PARAMS["attributemask"]


def test_signing_the_published_fields_matches_byte_for_byte_but_the_key(key: rsa.RSAPrivateKey) -> None:
    # Another key, same inputs: every byte outside MODULUS, SIGNATURE, Q1 and Q2 is identical.
    ours = sign_enclave(key, **PUBLISHED_PARAMS).to_bytes()
    published = PUBLISHED_SIGSTRUCT
    key_bytes: set[int] = set()
    for name in KEY_FIELDS:
        at = Sigstruct.offset_of(name)
        key_bytes.update(range(at, at + 384))
    differ = {i for i in range(Sigstruct.SIZE) if ours[i] != published[i]}
    assert differ <= key_bytes
    assert Sigstruct.from_bytes(ours).signed_bytes() == Sigstruct.from_bytes(published).signed_bytes()


# --- signing ----------------------------------------------------------------------------------


def test_generated_key_is_what_sgx_needs(key: rsa.RSAPrivateKey) -> None:
    numbers = key.public_key().public_numbers()
    assert key.key_size == 3072 and numbers.e == 3


def test_round_trip(signed: Sigstruct, key: rsa.RSAPrivateKey) -> None:
    parsed = Sigstruct.from_bytes(signed.to_bytes())
    assert parsed == signed
    verify_sigstruct(parsed)
    assert parsed.date == 0x20241231
    assert (parsed.isvprodid, parsed.isvsvn, parsed.swdefined, parsed.miscselect) == (7, 513, 0xA5A5A5A5, 1)
    assert parsed.isvfamilyid == bytes(range(16, 32)) and parsed.isvextprodid == bytes(range(32, 48))
    assert parsed.attributes.debug


def test_signature_is_pkcs1_sha256_over_the_signed_ranges(signed: Sigstruct, key: rsa.RSAPrivateKey) -> None:
    # Checked here without verify_sigstruct: the raw bytes 0..127 and 900..1027, the signature
    # read as a little-endian number, the library's own PKCS#1 v1.5 verification.
    raw = signed.to_bytes()
    n = key.public_key().public_numbers().n
    assert int.from_bytes(raw[128:512], "little") == n
    s = int.from_bytes(raw[516:900], "little")
    signed_bytes = raw[0:128] + raw[900:1028]
    key.public_key().verify(s.to_bytes(384, "big"), signed_bytes, padding.PKCS1v15(), hashes.SHA256())
    q1 = int.from_bytes(raw[1040:1424], "little")
    q2 = int.from_bytes(raw[1424:1808], "little")
    assert q1 == s * s // n
    assert q2 == (s**3 - q1 * s * n) // n
    # What EINIT does with them: S³ mod M from Q1 and Q2 without a division.
    assert s**3 - (q1 * s + q2) * n == pow(s, 3, n)


def test_default_date_is_today(key: rsa.RSAPrivateKey) -> None:
    before = datetime.date.today()
    sig = sign_enclave(key, **{**PUBLISHED_PARAMS, "date": None})
    assert sig.date in {bcd_date(before), bcd_date(datetime.date.today())}


def test_mrsigner_is_sha256_of_the_little_endian_modulus(signed: Sigstruct, key: rsa.RSAPrivateKey) -> None:
    n = key.public_key().public_numbers().n
    assert mrsigner_of(signed) == hashlib.sha256(n.to_bytes(384, "little")).digest()


def test_resigned_by_another_key_has_another_mrsigner(
    signed: Sigstruct, other_key: rsa.RSAPrivateKey
) -> None:
    fields: dict[str, Any] = {
        "enclavehash": signed.enclavehash,
        "attributes": signed.attributes,
        "attributemask": signed.attributemask,
        "miscselect": signed.miscselect,
        "miscmask": signed.miscmask,
        "isvprodid": signed.isvprodid,
        "isvsvn": signed.isvsvn,
        "date": datetime.date(2024, 12, 31),
        "swdefined": signed.swdefined,
        "isvfamilyid": signed.isvfamilyid,
        "isvextprodid": signed.isvextprodid,
    }
    resigned = sign_enclave(other_key, **fields)
    verify_sigstruct(resigned)
    assert resigned.signed_bytes() == signed.signed_bytes()
    assert mrsigner_of(resigned) != mrsigner_of(signed)


def test_intel_vendor_is_accepted(key: rsa.RSAPrivateKey) -> None:
    verify_sigstruct(sign_enclave(key, **PUBLISHED_PARAMS, vendor=0x8086))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"enclavehash": bytes(31)}, "ENCLAVEHASH must be 32 bytes"),
        ({"isvfamilyid": bytes(15)}, "ISVFAMILYID must be 16 bytes"),
        ({"isvextprodid": bytes(17)}, "ISVEXTPRODID must be 16 bytes"),
        ({"isvsvn": 1 << 16}, "ISVSVN"),
        ({"isvprodid": -1}, "ISVPRODID"),
        ({"miscselect": 1 << 32}, "MISCSELECT"),
        ({"miscmask": -5}, "MISCMASK"),
        ({"swdefined": 1 << 40}, "SWDEFINED"),
        ({"vendor": 0x1234}, "VENDOR"),
    ],
)
def test_sign_refuses_bad_fields(key: rsa.RSAPrivateKey, change: dict[str, object], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        sign_enclave(key, **{**PUBLISHED_PARAMS, **change})


def test_sign_refuses_keys_sgx_cannot_use() -> None:
    small = rsa.generate_private_key(public_exponent=3, key_size=2048)
    with pytest.raises(KeyFileError, match="RSA-2048; SGX enclave signing needs RSA-3072"):
        sign_enclave(small, **PUBLISHED_PARAMS)
    f4 = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    with pytest.raises(KeyFileError, match="public exponent 65537"):
        sign_enclave(f4, **PUBLISHED_PARAMS)


# --- EINIT's checks, each broken once ---------------------------------------------------------


def _xor(raw: bytes, at: int, mask: int = 0x01) -> bytes:
    out = bytearray(raw)
    out[at] ^= mask
    return bytes(out)


def _put(raw: bytes, at: int, value: bytes) -> bytes:
    return raw[:at] + value + raw[at + len(value) :]


SIG = "SIGNATURE does not verify over the signed fields"
TAMPER_CASES = [
    # (id, how to change the raw bytes, the message EINIT gives)
    ("header", lambda r: _xor(r, 0), "HEADER is not"),
    ("header-last-byte", lambda r: _xor(r, 15, 0x80), "HEADER is not"),
    ("header2", lambda r: _xor(r, 24), "HEADER2 is not"),
    ("vendor", lambda r: _put(r, 16, (0x1234).to_bytes(4, "little")), "VENDOR 0x1234"),
    ("date", lambda r: _xor(r, 20), SIG),
    ("swdefined", lambda r: _xor(r, 41), SIG),
    ("miscselect", lambda r: _xor(r, 900), SIG),
    ("miscmask", lambda r: _xor(r, 907, 0x10), SIG),
    ("isvfamilyid", lambda r: _xor(r, 912), SIG),
    ("attributes", lambda r: _xor(r, 928, 0x02), SIG),
    ("attributemask", lambda r: _xor(r, 950), SIG),
    ("enclavehash", lambda r: _xor(r, 991, 0x80), SIG),
    ("isvextprodid", lambda r: _xor(r, 1010), SIG),
    ("isvprodid", lambda r: _xor(r, 1024), SIG),
    ("isvsvn", lambda r: _xor(r, 1027, 0x40), SIG),
    ("modulus", lambda r: _xor(r, 128 + 100, 0x04), SIG),
    ("modulus-even", lambda r: _xor(r, 128), "MODULUS is not an odd 3072-bit number"),
    ("modulus-short", lambda r: _put(r, 128 + 383, b"\0"), "MODULUS is not an odd 3072-bit number"),
    ("exponent", lambda r: _put(r, 512, (65537).to_bytes(4, "little")), "EXPONENT is 65537, not 3"),
    ("signature", lambda r: _xor(r, 516 + 7), SIG),
    ("signature-too-big", lambda r: _put(r, 516, r[128:512]), "SIGNATURE is not less than MODULUS"),
    ("q1", lambda r: _xor(r, 1040 + 200), "Q1 is not"),
    ("q2", lambda r: _xor(r, 1424 + 383, 0x01), "Q2 is not"),
]


@pytest.mark.parametrize("source", ["ours", "published"])
@pytest.mark.parametrize(("case", "tamper", "message"), TAMPER_CASES, ids=[c[0] for c in TAMPER_CASES])
def test_each_check_catches_its_fault(
    source: str, case: str, tamper: object, message: str, signed: Sigstruct
) -> None:
    raw = signed.to_bytes() if source == "ours" else PUBLISHED_SIGSTRUCT
    verify_sigstruct(Sigstruct.from_bytes(raw))  # intact, it passes
    changed = tamper(raw)  # type: ignore[operator]
    assert changed != raw and len(changed) == Sigstruct.SIZE
    with pytest.raises(EnclaveInitError, match=message) as caught:
        verify_sigstruct(Sigstruct.from_bytes(changed))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("at", [44, 127, 908, 911, 992, 1007, 1028, 1039])
def test_nonzero_reserved_bytes_are_refused(at: int, signed: Sigstruct) -> None:
    with pytest.raises(FormatError, match="reserved bytes are not zero"):
        Sigstruct.from_bytes(_xor(signed.to_bytes(), at))


# --- key files --------------------------------------------------------------------------------


def _pem(key: object, fmt: serialization.PrivateFormat, enc: object | None = None) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, fmt, enc or serialization.NoEncryption()
    )


def test_save_and_load_round_trip(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "enclave.pem"
    save_signing_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    loaded = load_signing_key(path)
    assert loaded.private_numbers() == key.private_numbers()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enclave.pem"]  # no temporary left over


def test_save_ignores_a_permissive_umask(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_signing_key(key, tmp_path / "k.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


def test_save_refuses_to_overwrite(
    key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "enclave.pem"
    save_signing_key(key, path)
    with pytest.raises(KeyFileError, match="already exists"):
        save_signing_key(other_key, path)
    assert load_signing_key(path).private_numbers() == key.private_numbers()
    save_signing_key(other_key, path, overwrite=True)
    assert load_signing_key(path).private_numbers() == other_key.private_numbers()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enclave.pem"]


def test_save_into_missing_directory(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        save_signing_key(key, tmp_path / "nowhere" / "k.pem")


def test_save_refuses_a_key_sgx_cannot_use(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=3, key_size=2048)
    with pytest.raises(KeyFileError, match="RSA-2048"):
        save_signing_key(small, tmp_path / "k.pem")
    assert not (tmp_path / "k.pem").exists()


def test_load_pkcs8(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "k8.pem"
    path.write_bytes(_pem(key, serialization.PrivateFormat.PKCS8))
    assert load_signing_key(path).private_numbers() == key.private_numbers()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "key.pem"
    path.write_bytes(data)
    return path


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such file"):
        load_signing_key(tmp_path / "absent.pem")


def test_load_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read it"):
        load_signing_key(tmp_path)  # a directory


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_load_unreadable_permissions(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    path = _write(tmp_path, _pem(key, serialization.PrivateFormat.PKCS8))
    path.chmod(0)
    with pytest.raises(KeyFileError, match="cannot read it"):
        load_signing_key(path)


def test_load_huge_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not a key file"):
        load_signing_key(_write(tmp_path, b"-----BEGIN RSA PRIVATE KEY-----\n" + b"A" * 100_000))


@pytest.mark.parametrize("data", [b"", b"\x30\x82\x06\xe2\x02\x01\x00" + os.urandom(64), b"hello\n"])
def test_load_not_pem(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(KeyFileError, match="not a PEM file"):
        load_signing_key(_write(tmp_path, data))


def test_load_pem_without_a_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="holds no private key"):
        load_signing_key(_write(tmp_path, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))


def test_load_garbled_pem(tmp_path: Path) -> None:
    data = b"-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n"
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_signing_key(_write(tmp_path, data))


@pytest.mark.parametrize(
    "fmt", [serialization.PublicFormat.SubjectPublicKeyInfo, serialization.PublicFormat.PKCS1]
)
def test_load_public_key(key: rsa.RSAPrivateKey, tmp_path: Path, fmt: serialization.PublicFormat) -> None:
    data = key.public_key().public_bytes(serialization.Encoding.PEM, fmt)
    with pytest.raises(KeyFileError, match="is a public key; signing needs the private key"):
        load_signing_key(_write(tmp_path, data))


@pytest.mark.parametrize(
    "fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL]
)
def test_load_encrypted(key: rsa.RSAPrivateKey, tmp_path: Path, fmt: serialization.PrivateFormat) -> None:
    data = _pem(key, fmt, serialization.BestAvailableEncryption(b"correct horse"))
    with pytest.raises(KeyFileError, match="is encrypted") as caught:
        load_signing_key(_write(tmp_path, data))
    _assert_no_key_material(str(caught.value), data)


def test_load_not_rsa(tmp_path: Path) -> None:
    data = _pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8)
    with pytest.raises(KeyFileError, match="not an RSA private key") as caught:
        load_signing_key(_write(tmp_path, data))
    _assert_no_key_material(str(caught.value), data)


def test_load_wrong_size(tmp_path: Path) -> None:
    data = _pem(rsa.generate_private_key(public_exponent=3, key_size=2048), serialization.PrivateFormat.PKCS8)
    with pytest.raises(KeyFileError, match="RSA-2048; SGX enclave signing needs RSA-3072") as caught:
        load_signing_key(_write(tmp_path, data))
    _assert_no_key_material(str(caught.value), data)


def test_load_wrong_exponent(tmp_path: Path) -> None:
    f4 = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    data = _pem(f4, serialization.PrivateFormat.TraditionalOpenSSL)
    with pytest.raises(KeyFileError, match="public exponent 65537; SGX enclave signing needs 3") as caught:
        load_signing_key(_write(tmp_path, data))
    _assert_no_key_material(str(caught.value), data)


def _assert_no_key_material(message: str, pem: bytes) -> None:
    assert "\n" not in message
    for line in pem.decode().splitlines():
        if not line.startswith("-----") and len(line) > 8:
            assert line[:16] not in message

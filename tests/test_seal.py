"""Sealing on the simulated platform: who can unseal, and that no changed byte goes unnoticed."""

from __future__ import annotations

from pathlib import Path

import pytest

from haven.errors import SealError
from haven.tee.sgx.structs import KeyName, KeyPolicy, KeyRequest
from haven.tee.sim import seal as seal_module
from haven.tee.sim.cpu import SimEnclave
from haven.tee.sim.platform import SimPlatform
from haven.tee.sim.seal import (
    SEAL_FLAGS_MASK,
    SEAL_MISCMASK,
    AesGcmData,
    SealedDataHeader,
    parse_sealed,
    seal,
    sealed_size,
    unseal,
)
from tests.sim_helpers import DEBUG, cached_key, load, make_platform, small_image

SECRET = b"the disk key of the application"
AAD = b"image: data v1"


@pytest.fixture
def platform(tmp_path: Path) -> SimPlatform:
    return make_platform(tmp_path / "platform.json")


@pytest.fixture
def enclave(platform: SimPlatform) -> SimEnclave:
    return load(platform, isvsvn=2)


def _cannot_unseal(enclave: SimEnclave, blob: bytes, match: str | None = None) -> str:
    with pytest.raises(SealError, match=match) as e:
        unseal(enclave, blob)
    text = str(e.value)
    assert "\n" not in text and SECRET.decode() not in text
    return text


def test_round_trip(enclave: SimEnclave) -> None:
    for policy in (KeyPolicy.MRSIGNER, KeyPolicy.MRENCLAVE, KeyPolicy.MRENCLAVE | KeyPolicy.MRSIGNER):
        blob = seal(enclave, SECRET, policy, AAD)
        assert len(blob) == sealed_size(len(SECRET), len(AAD))
        assert unseal(enclave, blob) == (SECRET, AAD)
    assert unseal(enclave, seal(enclave, b"")) == (b"", b"")
    assert unseal(enclave, seal(enclave, b"", aad=AAD)) == (b"", AAD)
    assert unseal(enclave, seal(enclave, bytearray(SECRET), aad=memoryview(AAD))) == (SECRET, AAD)


def test_the_header_names_policy_keyid_and_svns(enclave: SimEnclave, platform: SimPlatform) -> None:
    blob = seal(enclave, SECRET, KeyPolicy.MRENCLAVE, AAD)
    header = parse_sealed(blob)
    req = header.key_request
    assert req.keyname == KeyName.SEAL_KEY and req.keypolicy == KeyPolicy.MRENCLAVE
    assert req.isvsvn == 2 and req.cpusvn == platform.config.cpusvn
    assert req.attributemask.flags == SEAL_FLAGS_MASK and req.miscmask == SEAL_MISCMASK
    assert header.plain_text_offset == len(SECRET)
    assert header.aes_data.payload_size == len(SECRET) + len(AAD)
    assert blob.endswith(AAD) and SECRET not in blob
    # A fresh KEYID, hence a fresh key, every time.
    again = parse_sealed(seal(enclave, SECRET, KeyPolicy.MRENCLAVE, AAD)).key_request
    assert again.keyid != req.keyid


def test_another_process_of_the_same_enclave_unseals(enclave: SimEnclave, platform: SimPlatform) -> None:
    blob = seal(enclave, SECRET, KeyPolicy.MRENCLAVE, AAD)
    same = load(SimPlatform.open(platform.path), isvsvn=2)
    assert unseal(same, blob) == (SECRET, AAD)


def test_mrenclave_sealed_data_unseals_only_in_the_same_enclave(
    enclave: SimEnclave, platform: SimPlatform
) -> None:
    blob = seal(enclave, SECRET, KeyPolicy.MRENCLAVE)
    for other in (
        load(platform, small_image(b"other code"), isvsvn=2),  # same signer, other image
        load(platform, small_image(data=b"other data"), isvsvn=2),
        load(platform, isvsvn=2, isvprodid=9),
        load(platform, isvsvn=3),  # same image, a newer SVN: the request's SVN is still derivable...
    ):
        if other.secs.isvsvn == 3:
            assert unseal(other, blob) == (SECRET, b"")  # ...so a newer build of the same code unseals
            continue
        _cannot_unseal(other, blob, "failed authentication")
    # As on SGX, an MRENCLAVE key names the code, not its author: the same image signed by another
    # key (same ISVPRODID and ISVSVN) is the same enclave and unseals.
    resigned = load(platform, key=cached_key("other"), isvsvn=2)
    assert unseal(resigned, blob) == (SECRET, b"")


def test_mrsigner_sealed_data_follows_signer_product_and_svn(
    enclave: SimEnclave, platform: SimPlatform
) -> None:
    blob = seal(enclave, SECRET, KeyPolicy.MRSIGNER, AAD)
    # Another enclave of the same signer and product, at the same or a higher ISVSVN: yes.
    for svn in (2, 3, 65535):
        newer = load(platform, small_image(b"version %d" % svn), isvsvn=svn)
        assert unseal(newer, blob) == (SECRET, AAD)
    # A lower ISVSVN cannot even derive the key.
    older = load(platform, small_image(b"version 1"), isvsvn=1)
    assert "ISVSVN 2 is above the enclave's ISVSVN 1" in _cannot_unseal(older, blob, "cannot derive")
    # Another product, another signer, or a debug build of the very same enclave: no.
    _cannot_unseal(load(platform, isvsvn=2, isvprodid=2), blob, "failed authentication")
    _cannot_unseal(load(platform, key=cached_key("other"), isvsvn=2), blob, "failed authentication")
    _cannot_unseal(load(platform, attributes=DEBUG, isvsvn=2), blob, "failed authentication")


def test_a_debug_build_does_not_unseal_mrenclave_data_either(
    enclave: SimEnclave, platform: SimPlatform
) -> None:
    debug = load(platform, attributes=DEBUG, isvsvn=2)
    assert debug.secs.mrenclave == enclave.secs.mrenclave
    _cannot_unseal(debug, seal(enclave, SECRET, KeyPolicy.MRENCLAVE))
    # And the other way round: data sealed by a debug build stays away from production.
    _cannot_unseal(enclave, seal(debug, SECRET, KeyPolicy.MRENCLAVE))


def test_another_platform_cannot_unseal(enclave: SimEnclave, tmp_path: Path, platform: SimPlatform) -> None:
    other = make_platform(tmp_path / "other.json")
    other.config.cpusvn = platform.config.cpusvn
    for policy in (KeyPolicy.MRENCLAVE, KeyPolicy.MRSIGNER):
        _cannot_unseal(load(other, isvsvn=2), seal(enclave, SECRET, policy), "another enclave or platform")


def test_a_new_owner_epoch_makes_sealed_data_unreadable(enclave: SimEnclave, platform: SimPlatform) -> None:
    blob = seal(enclave, SECRET)
    platform.config.owner_epoch = bytes(16)
    _cannot_unseal(enclave, blob)


def test_cpusvn_upgrade_unseals_old_data_downgrade_cannot_unseal_new(
    enclave: SimEnclave, platform: SimPlatform
) -> None:
    old_blob = seal(enclave, SECRET)
    old = platform.config.cpusvn
    platform.config.cpusvn = bytes([old[0] + 1]) + old[1:]
    platform.save()
    upgraded = load(SimPlatform.open(platform.path), isvsvn=2)
    assert unseal(upgraded, old_blob) == (SECRET, b"")
    new_blob = seal(upgraded, SECRET)
    assert parse_sealed(new_blob).key_request.cpusvn == platform.config.cpusvn
    platform.config.cpusvn = old
    platform.save()
    downgraded = load(SimPlatform.open(platform.path), isvsvn=2)
    assert "CPUSVN" in _cannot_unseal(downgraded, new_blob, "cannot derive")


# -- every changed byte fails -------------------------------------------------------------------------------


def test_every_single_changed_byte_fails(enclave: SimEnclave) -> None:
    blob = seal(enclave, SECRET, KeyPolicy.MRSIGNER, AAD)
    for at in range(len(blob)):
        changed = blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]
        with pytest.raises(SealError):
            unseal(enclave, changed)


def _fields() -> list[tuple[str, int]]:
    out = []
    for f in KeyRequest._layout():
        out.append((f"key_request.{f.name}", f.offset))
    out.append(("plain_text_offset", SealedDataHeader.offset_of("plain_text_offset")))
    out.append(("reserved", SealedDataHeader.offset_of("reserved")))
    base = SealedDataHeader.offset_of("aes_data")
    for f in AesGcmData._layout():
        out.append((f"aes_data.{f.name}", base + f.offset))
    out.append(("ciphertext", SealedDataHeader.SIZE))
    out.append(("ciphertext-last", SealedDataHeader.SIZE + len(SECRET) - 1))
    out.append(("aad", SealedDataHeader.SIZE + len(SECRET)))
    out.append(("aad-last", SealedDataHeader.SIZE + len(SECRET) + len(AAD) - 1))
    return out


FIELDS = _fields()


@pytest.mark.parametrize(("field", "offset"), FIELDS, ids=[f[0] for f in FIELDS])
def test_each_field_of_the_blob_is_protected(enclave: SimEnclave, field: str, offset: int) -> None:
    blob = seal(enclave, SECRET, KeyPolicy.MRSIGNER, AAD)
    for bit in (0x01, 0x80):
        changed = blob[:offset] + bytes([blob[offset] ^ bit]) + blob[offset + 1 :]
        _cannot_unseal(enclave, changed)


@pytest.mark.parametrize("cut", [0, 1, SealedDataHeader.SIZE - 1, SealedDataHeader.SIZE, -1])
def test_truncated_blobs_fail(enclave: SimEnclave, cut: int) -> None:
    blob = seal(enclave, SECRET, aad=AAD)
    _cannot_unseal(enclave, blob[:cut])


def test_extended_blobs_fail(enclave: SimEnclave) -> None:
    blob = seal(enclave, SECRET, aad=AAD)
    _cannot_unseal(enclave, blob + b"\x00", "claims a payload of")


def test_lengths_that_lie_are_refused_before_decrypting(enclave: SimEnclave) -> None:
    blob = seal(enclave, SECRET, aad=AAD)
    header = parse_sealed(blob)
    tail = blob[SealedDataHeader.SIZE :]
    bad_offset = header.replace(plain_text_offset=len(tail) + 1).to_bytes()
    _cannot_unseal(enclave, bad_offset + tail, "beyond its payload")
    huge = header.replace(aes_data=header.aes_data.replace(payload_size=0xFFFF_FFFF)).to_bytes()
    _cannot_unseal(enclave, huge + tail, "more than")
    report_key = header.replace(key_request=header.key_request.replace(keyname=KeyName.REPORT_KEY))
    _cannot_unseal(enclave, report_key.to_bytes() + tail, "not SEAL_KEY")
    no_identity = header.replace(key_request=header.key_request.replace(keypolicy=0))
    _cannot_unseal(enclave, no_identity.to_bytes() + tail, "MRENCLAVE or MRSIGNER")


def test_non_bytes_are_refused(enclave: SimEnclave) -> None:
    with pytest.raises(SealError):
        unseal(enclave, "text")  # type: ignore[arg-type]
    with pytest.raises(SealError):
        seal(enclave, "text")  # type: ignore[arg-type]
    with pytest.raises(SealError):
        seal(enclave, b"", aad=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", [0, KeyPolicy.NOISVPRODID, 1 << 6, -1, True])
def test_bad_policies_are_refused(enclave: SimEnclave, policy: int) -> None:
    with pytest.raises(SealError, match="policy"):
        seal(enclave, SECRET, policy)  # type: ignore[arg-type]


def test_kss_policy_bits_without_kss_are_refused_at_seal(enclave: SimEnclave) -> None:
    with pytest.raises(SealError, match="KSS"):
        seal(enclave, SECRET, KeyPolicy.MRSIGNER | KeyPolicy.NOISVPRODID)


def test_absurd_sizes_are_refused(enclave: SimEnclave, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seal_module, "MAX_SEAL_PAYLOAD", 64)
    assert unseal(enclave, seal(enclave, bytes(60), aad=bytes(4)))[0] == bytes(60)
    with pytest.raises(SealError, match="more than 64"):
        seal(enclave, bytes(60), aad=bytes(5))
    monkeypatch.setattr(seal_module, "MAX_SEAL_PAYLOAD", 1 << 30)
    blob = seal(enclave, bytes(100))
    monkeypatch.setattr(seal_module, "MAX_SEAL_PAYLOAD", 64)
    _cannot_unseal(enclave, blob, "more than 64")

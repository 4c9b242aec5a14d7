"""ECREATE/EADD/EEXTEND/EINIT on the simulated platform: what loads, and every reason to refuse."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from haven.errors import EnclaveInitError
from haven.tee.sgx.image import EnclaveImage, PageRun, enclave_size_for
from haven.tee.sgx.sigstruct import mrsigner_of, sign_enclave
from haven.tee.sgx.structs import (
    PAGE_SIZE,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    PageType,
    Secinfo,
    SecinfoFlags,
    Sigstruct,
    Tcs,
)
from haven.tee.sim.platform import SimPlatform
from tests.sim_helpers import DEBUG, PRODUCTION, R, W, X, cached_key, load, make_platform, sign, small_image

F = AttributeFlags


@pytest.fixture
def platform(tmp_path: Path) -> SimPlatform:
    return make_platform(tmp_path / "platform.json")


def _refused(platform: SimPlatform, image: EnclaveImage, sig: Sigstruct, match: str, **kw: object) -> str:
    with pytest.raises(EnclaveInitError, match=match) as e:
        platform.load_enclave(image, sig, **kw)  # type: ignore[arg-type]
    text = str(e.value)
    assert "\n" not in text
    return text


def _with_run(image: EnclaveImage, name: str, **changes: object) -> EnclaveImage:
    runs = tuple(dataclasses.replace(r, **changes) if r.name == name else r for r in image.runs)  # type: ignore[arg-type]
    return dataclasses.replace(image, runs=runs)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# -- what EINIT produces -------------------------------------------------------------------------------


def test_einit_fills_in_the_identity(platform: SimPlatform) -> None:
    image = small_image()
    sig = sign(image, isvprodid=7, isvsvn=3)
    enclave = platform.load_enclave(image, sig)
    secs = enclave.secs
    assert secs.mrenclave == image.mrenclave() == sig.enclavehash
    assert secs.mrsigner == mrsigner_of(sig)
    assert (secs.isvprodid, secs.isvsvn) == (7, 3)
    assert secs.attributes.flags == F.INIT | F.MODE64BIT and secs.attributes.xfrm == XFRM_LEGACY
    assert (secs.size, secs.ssaframesize) == (image.size, image.ssaframesize)
    assert enclave.image is image and enclave.platform is platform


def test_the_secs_cannot_be_changed_from_outside(platform: SimPlatform) -> None:
    enclave = load(platform)
    enclave.secs.isvsvn = 99
    assert enclave.secs.isvsvn == 1


def test_a_resigned_sigstruct_gives_another_mrsigner(platform: SimPlatform) -> None:
    image = small_image()
    a = platform.load_enclave(image, sign(image, cached_key("author")))
    b = platform.load_enclave(image, sign(image, cached_key("other")))
    assert a.secs.mrenclave == b.secs.mrenclave
    assert a.secs.mrsigner != b.secs.mrsigner


# -- the image changed after signing --------------------------------------------------------------------


MEASURED_RUNS = ("tcs", "ssa", "code", "data")


@pytest.mark.parametrize("run", MEASURED_RUNS)
@pytest.mark.parametrize("where", [0, 255, 256, PAGE_SIZE - 1])
def test_a_changed_byte_in_any_measured_run_is_refused(platform: SimPlatform, run: str, where: int) -> None:
    image = small_image()
    sig = sign(image)
    data = image.run(run).data
    if run == "tcs":
        # FLAGS, CSSA, OENTRY, FSLIMIT: the TCS stays well-formed, so the measurement is what fails.
        where = {0: 8, 255: 24, 256: 32, PAGE_SIZE - 1: 64}[where]
    changed = _with_run(image, run, data=_flip(data, where))
    _refused(platform, changed, sig, "does not match SIGSTRUCT.ENCLAVEHASH")


def test_unmeasured_pages_are_not_part_of_the_identity(platform: SimPlatform) -> None:
    image = small_image()
    sig = sign(image)
    changed = _with_run(image, "heap", data=b"\x01" * PAGE_SIZE)
    assert platform.load_enclave(changed, sig).secs.mrenclave == sig.enclavehash


@pytest.mark.parametrize(
    ("run", "secinfo"),
    [
        ("code", Secinfo.for_page(PageType.PT_REG, R | W | X)),
        ("code", Secinfo.for_page(PageType.PT_REG, R)),
        ("data", Secinfo.for_page(PageType.PT_REG, R | X)),
        ("heap", Secinfo.for_page(PageType.PT_REG, R | W | X)),
        ("ssa", Secinfo.for_page(PageType.PT_TCS)),
    ],
)
def test_a_changed_page_type_or_permission_is_refused(
    platform: SimPlatform, run: str, secinfo: Secinfo
) -> None:
    image = small_image()
    sig = sign(image)
    _refused(platform, _with_run(image, run, secinfo=secinfo), sig, "does not match|TCS")


def test_a_changed_offset_is_refused(platform: SimPlatform) -> None:
    image = small_image()
    sig = sign(image)
    moved = _with_run(image, "heap", offset=5 * PAGE_SIZE)
    _refused(platform, dataclasses.replace(moved, size=8 * PAGE_SIZE), sig, "does not match")


def test_a_changed_measured_flag_is_refused(platform: SimPlatform) -> None:
    image = small_image()
    sig = sign(image)
    _refused(platform, _with_run(image, "data", measured=False), sig, "does not match")
    _refused(platform, _with_run(image, "heap", measured=True), sig, "does not match")


def test_changed_secs_size_or_ssaframesize_is_refused(platform: SimPlatform) -> None:
    image = small_image()
    sig = sign(image)
    _refused(platform, dataclasses.replace(image, size=image.size * 2), sig, "does not match")
    _refused(platform, dataclasses.replace(image, ssaframesize=2), sig, "does not match")
    _refused(platform, dataclasses.replace(image, size=3 * image.size), sig, "ECREATE.*power of two")


# -- the SIGSTRUCT ---------------------------------------------------------------------------------------


def test_a_sigstruct_with_another_keys_modulus_is_refused(platform: SimPlatform) -> None:
    image = small_image()
    mine, theirs = sign(image, cached_key("author")), sign(image, cached_key("other"))
    # ENCLAVEHASH matches, but the signature is not by the key the SIGSTRUCT names.
    forged = mine.replace(modulus=theirs.modulus)
    _refused(platform, image, forged, "SIGNATURE")
    forged = theirs.replace(signature=mine.signature, q1=mine.q1, q2=mine.q2)
    _refused(platform, image, forged, "SIGNATURE")


@pytest.mark.parametrize(
    "change",
    [
        {"isvsvn": 2},
        {"isvprodid": 2},
        {"attributes": DEBUG},
        {"attributemask": Attributes(flags=0, xfrm=0)},
        {"miscmask": 0},
        {"enclavehash": bytes(32)},
        {"date": 0x20990101},
        {"isvfamilyid": b"\x01" * 16},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_tampered_signed_field_is_refused(platform: SimPlatform, change: dict[str, object]) -> None:
    image = small_image()
    _refused(platform, image, sign(image).replace(**change), "SIGNATURE does not verify")


def test_a_tampered_header_is_refused(platform: SimPlatform) -> None:
    image = small_image()
    _refused(platform, image, sign(image).replace(header=bytes(16)), "HEADER")


# -- attributes -------------------------------------------------------------------------------------------


def test_debug_turned_on_by_the_loader_is_refused_when_masked(platform: SimPlatform) -> None:
    image = small_image()
    sig = sign(image)
    text = _refused(platform, image, sig, "ATTRIBUTES differ", attributes=DEBUG)
    assert "DEBUG" in text


def test_debug_turned_on_by_the_loader_when_not_masked_loads_as_debug(platform: SimPlatform) -> None:
    image = small_image()
    mask = Attributes(flags=0xFFFF_FFFF_FFFF_FFFF & ~int(F.INIT | F.DEBUG), xfrm=XFRM_LEGACY)
    sig = sign(image, attributemask=mask)
    enclave = platform.load_enclave(image, sig, attributes=DEBUG)
    assert enclave.secs.attributes.debug


def test_xfrm_and_miscselect_under_their_masks(platform: SimPlatform) -> None:
    image = small_image()
    sig = sign(image, attributemask=Attributes(flags=STRICT_FLAGS, xfrm=0xFFFF_FFFF_FFFF_FFFF))
    avx = Attributes(flags=PRODUCTION.flags, xfrm=XFRM_LEGACY | 0x4)
    _refused(platform, image, sig, "XFRM", attributes=avx)
    _refused(platform, image, sig, "MISCSELECT", miscselect=1)
    loose = sign(image, attributemask=Attributes(flags=STRICT_FLAGS, xfrm=0), miscmask=0)
    enclave = platform.load_enclave(image, loose, attributes=avx, miscselect=1)
    assert enclave.secs.attributes.xfrm == 0x7 and enclave.secs.miscselect == 1


STRICT_FLAGS = 0xFFFF_FFFF_FFFF_FFFF & ~int(F.INIT)


@pytest.mark.parametrize(
    ("attributes", "match"),
    [
        (Attributes(flags=int(F.DEBUG), xfrm=XFRM_LEGACY), "MODE64BIT"),
        (Attributes(flags=int(F.MODE64BIT | F.INIT), xfrm=XFRM_LEGACY), "INIT must be clear"),
        (Attributes(flags=int(F.MODE64BIT) | 1 << 3, xfrm=XFRM_LEGACY), "reserved attribute bits"),
        (Attributes(flags=int(F.MODE64BIT) | 1 << 40, xfrm=XFRM_LEGACY), "reserved attribute bits"),
        (Attributes(flags=int(F.MODE64BIT | F.CET), xfrm=XFRM_LEGACY), "CET"),
        (Attributes(flags=int(F.MODE64BIT), xfrm=0x1), "x87 and SSE"),
        (Attributes(flags=int(F.MODE64BIT), xfrm=0x2), "x87 and SSE"),
        (Attributes(flags=int(F.MODE64BIT), xfrm=0x3 | 1 << 3), "lacks"),
        (Attributes(flags=int(F.MODE64BIT), xfrm=0x7 | 1 << 5), "legal XCR0"),
        (Attributes(flags=int(F.MODE64BIT), xfrm=0x3 | 0b111 << 5), "legal XCR0"),
        (Attributes(flags=int(F.MODE64BIT | F.EINITTOKEN_KEY), xfrm=XFRM_LEGACY), "launch enclave"),
        (Attributes(flags=int(F.MODE64BIT | F.PROVISIONKEY), xfrm=XFRM_LEGACY), "quoting enclave"),
        (Attributes(flags=1 << 64, xfrm=XFRM_LEGACY), "ECREATE"),
    ],
)
def test_bad_attributes_are_refused(platform: SimPlatform, attributes: Attributes, match: str) -> None:
    image = small_image()
    # Signed with exactly these attributes, so only the processor's own rules can refuse them.
    sig = sign(image, attributes=attributes) if attributes.flags < 1 << 64 else sign(image)
    _refused(platform, image, sig, match, attributes=attributes)


def test_avx512_xfrm_is_accepted(platform: SimPlatform) -> None:
    image = small_image()
    attrs = Attributes(flags=PRODUCTION.flags, xfrm=0x2E7)
    assert platform.load_enclave(image, sign(image, attributes=attrs)).secs.attributes.xfrm == 0x2E7


def test_provisionkey_only_for_the_platforms_quoting_enclave_key(platform: SimPlatform) -> None:
    image = small_image()
    attrs = Attributes(flags=int(F.MODE64BIT | F.PROVISIONKEY), xfrm=XFRM_LEGACY)
    enclave = platform.load_enclave(image, sign(image, platform.qe_signing_key(), attributes=attrs))
    assert enclave.secs.attributes.flags & F.PROVISIONKEY
    _refused(platform, image, sign(image, cached_key("author"), attributes=attrs), "quoting enclave")


def test_kss_configuration_needs_the_kss_attribute(platform: SimPlatform) -> None:
    image = small_image()
    _refused(platform, image, sign(image), "KSS", configid=b"\x01" * 64)
    _refused(platform, image, sign(image), "KSS", configsvn=1)
    kss = Attributes(flags=int(F.MODE64BIT | F.KSS), xfrm=XFRM_LEGACY)
    sig = sign(image, attributes=kss, isvfamilyid=b"\x02" * 16, isvextprodid=b"\x03" * 16)
    enclave = platform.load_enclave(image, sig, configid=b"\x01" * 64, configsvn=4)
    assert enclave.secs.configid == b"\x01" * 64 and enclave.secs.configsvn == 4
    body = enclave.ereport(enclave.target_info()).body
    assert body.isvfamilyid == b"\x02" * 16 and body.isvextprodid == b"\x03" * 16
    # Without KSS the SIGSTRUCT's family and extended product IDs are not part of the identity.
    plain = platform.load_enclave(image, sign(image, isvfamilyid=b"\x02" * 16))
    assert plain.ereport(plain.target_info()).body.isvfamilyid == bytes(16)


@pytest.mark.parametrize(("configid", "configsvn"), [(b"\x00" * 63, 0), (bytes(64), 70000), (bytes(64), -1)])
def test_malformed_config_fields_are_refused(platform: SimPlatform, configid: bytes, configsvn: int) -> None:
    image = small_image()
    _refused(platform, image, sign(image), "CONFIG", configid=configid, configsvn=configsvn)


def test_unsupported_miscselect_is_refused(platform: SimPlatform) -> None:
    image = small_image()
    sig = sign(image, miscselect=1 << 5, miscmask=0)
    _refused(platform, image, sig, "MISCSELECT", miscselect=1 << 5)


# -- EADD's checks --------------------------------------------------------------------------------------


def _one_run_image(run: PageRun) -> EnclaveImage:
    return EnclaveImage(size=enclave_size_for(run.end), ssaframesize=1, runs=(run,))


def _signed(image: EnclaveImage) -> Sigstruct:
    # Sign what the measurement says, so EADD's own rule is what refuses.
    return sign_enclave(
        cached_key("author"),
        enclavehash=image.mrenclave(),
        attributes=PRODUCTION,
        attributemask=PRODUCTION,
        miscselect=0,
        miscmask=0,
        isvprodid=1,
        isvsvn=1,
    )


@pytest.mark.parametrize(
    ("run", "match"),
    [
        (PageRun(0, bytes(PAGE_SIZE), Secinfo.for_page(PageType.PT_SECS)), "type 0"),
        (PageRun(0, bytes(PAGE_SIZE), Secinfo.for_page(PageType.PT_VA)), "type 3"),
        (PageRun(0, bytes(PAGE_SIZE), Secinfo.for_page(PageType.PT_TRIM)), "type 4"),
        (PageRun(0, bytes(PAGE_SIZE), Secinfo.for_page(PageType.PT_REG, W)), "writable but not readable"),
        (
            PageRun(0, bytes(PAGE_SIZE), Secinfo.for_page(PageType.PT_REG, R | SecinfoFlags.PENDING)),
            "reserved bits",
        ),
        (PageRun(0, bytes(PAGE_SIZE), Secinfo(flags=0x200 | 1 << 16)), "reserved bits"),
        (PageRun(0, bytes(PAGE_SIZE), Secinfo(flags=0x200, reserved=b"\x01" + bytes(55))), "reserved bytes"),
        (PageRun(0, Tcs().to_bytes(), Secinfo.for_page(PageType.PT_TCS, R)), "no R/W/X"),
        (PageRun(0, Tcs(ossa=100).to_bytes(), Secinfo.for_page(PageType.PT_TCS)), "page-aligned"),
        (PageRun(0, Tcs(ofsbase=8).to_bytes(), Secinfo.for_page(PageType.PT_TCS)), "page-aligned"),
        (PageRun(0, Tcs(flags=2).to_bytes(), Secinfo.for_page(PageType.PT_TCS)), "TCS.FLAGS"),
        (PageRun(0, b"\x01" + bytes(PAGE_SIZE - 1), Secinfo.for_page(PageType.PT_TCS)), "invalid TCS"),
        (PageRun(0, Tcs().to_bytes()[:-1] + b"\x01", Secinfo.for_page(PageType.PT_TCS)), "invalid TCS"),
    ],
)
def test_eadd_refuses_pages_sgx_refuses(platform: SimPlatform, run: PageRun, match: str) -> None:
    image = _one_run_image(run)
    _refused(platform, image, _signed(image), match)


def test_a_well_formed_tcs_loads(platform: SimPlatform) -> None:
    run = PageRun(0, Tcs(flags=1, ossa=PAGE_SIZE, nssa=1).to_bytes(), Secinfo.for_page(PageType.PT_TCS))
    image = _one_run_image(run)
    assert platform.load_enclave(image, _signed(image)).secs.mrenclave == image.mrenclave()


def test_wrong_argument_types_are_refused(platform: SimPlatform) -> None:
    image = small_image()
    with pytest.raises(EnclaveInitError):
        platform.load_enclave(image, b"not a sigstruct")  # type: ignore[arg-type]
    with pytest.raises(EnclaveInitError):
        platform.load_enclave(image.runs, sign(image))  # type: ignore[arg-type]


# -- bundles: module, manifest or Haven code changed after signing ---------------------------------------


def test_einit_refuses_a_bundle_changed_after_signing(platform: SimPlatform) -> None:
    from haven.bundle import layout

    contents = {
        layout.CODE: b"haven enclave code archive" * 50,
        layout.WASMTIME: b"\x7fELF wasmtime" * 300,
        layout.MANIFEST: b'{"format":"haven-manifest/1"}',
        layout.MODULE: b"\x00asm\x01\x00\x00\x00",
    }
    image = layout.build_image(contents)
    sig = sign(image)
    assert platform.load_enclave(image, sig).secs.mrenclave == image.mrenclave()
    for name in layout.CONTENT_SEGMENTS:
        changed = dict(contents)
        changed[name] = _flip(contents[name], len(contents[name]) // 2)
        tampered = layout.build_image(changed)
        text = _refused(platform, tampered, sig, "changed after signing")
        assert tampered.mrenclave().hex() in text

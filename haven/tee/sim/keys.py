"""EGETKEY's key derivation, as the SDM describes it, over the simulated platform's fused secrets.

SDM Vol. 3D, EGETKEY ("Key Derivation" table and the instruction's pseudo-code): the processor
assembles a block of *key dependencies* — which key, which enclave identity, which SVNs, the owner
epoch, the request's KEYID — and derives the 128-bit key as AES-128-CMAC over that block, keyed by a
value derived from the package's fuses. This module declares the dependency block once, as a table,
builds it for each key name exactly as the pseudo-code does, and computes the CMAC.

The platform supplies three 128-bit *base keys*, each derived from its fused root secret with a
distinct HKDF label (see ``SimPlatform``): seal fuses (SEAL_KEY, PROVISION_SEAL_KEY), report fuses
(REPORT_KEY) and provisioning fuses (PROVISION_KEY). The layout of the dependency block below is
Haven's own: hardware never exposes it, so only its content has to follow the SDM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from haven.structs import Struct, field_at
from haven.tee.sgx.structs import AttributeFlags, Attributes, KeyName, KeyPolicy, KeyRequest, Secs

KEY_SIZE = 16  # EGETKEY returns a 128-bit key (SDM Vol. 3D, EGETKEY: "OUTPUTDATA ... 16 bytes")

# EGETKEY ORs these into the request's ATTRIBUTEMASK for seal and provisioning keys, so a key never
# ignores whether the enclave is initialised or debuggable (SDM EGETKEY pseudo-code:
# "TMP_ATTRIBUTES ← (DS:RBX.ATTRIBUTEMASK | 0000000000000003H) & TMP_CURRENTSECS.ATTRIBUTES").
FORCED_ATTRIBUTE_BITS = int(AttributeFlags.INIT | AttributeFlags.DEBUG)

# KEYPOLICY bits as plain ints (enum arithmetic is slow on a path run for every key).
_MRENCLAVE, _MRSIGNER = int(KeyPolicy.MRENCLAVE), int(KeyPolicy.MRSIGNER)
_NOISVPRODID, _CONFIGID = int(KeyPolicy.NOISVPRODID), int(KeyPolicy.CONFIGID)
_ISVFAMILYID, _ISVEXTPRODID = int(KeyPolicy.ISVFAMILYID), int(KeyPolicy.ISVEXTPRODID)


@dataclass
class KeyDependencies(Struct):
    """TMP_KEYDEPENDENCIES of the SDM's EGETKEY: everything a derived key depends on (288 bytes)."""

    SIZE: ClassVar[int] = 288
    keyname: int = field_at(0, "<H")
    keypolicy: int = field_at(2, "<H")
    isvprodid: int = field_at(4, "<H")
    isvsvn: int = field_at(6, "<H")
    configsvn: int = field_at(8, "<H")
    reserved1: bytes = field_at(10, "6s", reserved=True)
    ownerepoch: bytes = field_at(16, "16s")
    attributes: Attributes = field_at(32, Attributes)
    attributemask: Attributes = field_at(48, Attributes)
    mrenclave: bytes = field_at(64, "32s")
    mrsigner: bytes = field_at(96, "32s")
    keyid: bytes = field_at(128, "32s")
    cpusvn: bytes = field_at(160, "16s")
    miscselect: int = field_at(176, "<I")
    miscmask: int = field_at(180, "<I")
    reserved2: bytes = field_at(184, "8s", reserved=True)
    isvfamilyid: bytes = field_at(192, "16s")
    isvextprodid: bytes = field_at(208, "16s")
    configid: bytes = field_at(224, "64s")


def cmac(key: bytes, data: bytes) -> bytes:
    """AES-128-CMAC (NIST SP 800-38B), the MAC of EREPORT and the KDF of EGETKEY."""
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def derive_key(base_key: bytes, deps: KeyDependencies) -> bytes:
    """The derived key: AES-128-CMAC(base key, dependencies)."""
    return cmac(base_key, deps.to_bytes())


@dataclass(frozen=True)
class EnclaveIdentity:
    """What EGETKEY reads from the calling enclave's SECS (SECS plus the KSS identity fields)."""

    secs: Secs
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)


def sealing_dependencies(who: EnclaveIdentity, request: KeyRequest, ownerepoch: bytes) -> KeyDependencies:
    """SEAL_KEY, PROVISION_KEY and PROVISION_SEAL_KEY dependencies (SDM EGETKEY, "Key Derivation").

    The caller has already checked the request (SVNs not above the enclave's and the platform's,
    policy bits, reserved fields). ``ownerepoch`` is the platform's for SEAL_KEY and zero for the
    provisioning keys, which must survive a change of owner.
    """
    secs = who.secs
    policy = request.keypolicy
    name = request.keyname
    provisioning = name in (KeyName.PROVISION_KEY, KeyName.PROVISION_SEAL_KEY)
    mask = Attributes(
        flags=request.attributemask.flags | FORCED_ATTRIBUTE_BITS, xfrm=request.attributemask.xfrm
    )
    # The provisioning keys always name the signer and never a single enclave (SDM, "Key Derivation").
    use_mrenclave = not provisioning and bool(policy & _MRENCLAVE)
    use_mrsigner = provisioning or bool(policy & _MRSIGNER)
    return KeyDependencies(
        keyname=name,
        keypolicy=policy,
        isvprodid=0 if policy & _NOISVPRODID else secs.isvprodid,
        isvsvn=request.isvsvn,
        configsvn=request.configsvn,
        ownerepoch=ownerepoch,
        attributes=secs.attributes.masked(mask),
        attributemask=request.attributemask,
        mrenclave=secs.mrenclave if use_mrenclave else bytes(32),
        mrsigner=secs.mrsigner if use_mrsigner else bytes(32),
        # The provisioning keys have no KEYID: they are the same on every request.
        keyid=bytes(32) if provisioning else request.keyid,
        cpusvn=request.cpusvn,
        miscselect=secs.miscselect & request.miscmask,
        miscmask=request.miscmask,
        isvfamilyid=who.isvfamilyid if policy & _ISVFAMILYID else bytes(16),
        isvextprodid=who.isvextprodid if policy & _ISVEXTPRODID else bytes(16),
        configid=secs.configid if policy & _CONFIGID else bytes(64),
    )


def report_dependencies(
    *,
    mrenclave: bytes,
    attributes: Attributes,
    miscselect: int,
    configid: bytes,
    configsvn: int,
    cpusvn: bytes,
    keyid: bytes,
    ownerepoch: bytes,
) -> KeyDependencies:
    """REPORT_KEY dependencies: the *target* enclave's identity, the current CPUSVN and a KEYID.

    EREPORT builds them from TARGETINFO and CR_REPORT_KEYID; EGETKEY(REPORT_KEY) builds them from
    the caller's own SECS and the request's KEYID, so only the target can recompute the MAC
    (SDM Vol. 3D, EREPORT and EGETKEY pseudo-code).
    """
    return KeyDependencies(
        keyname=KeyName.REPORT_KEY,
        ownerepoch=ownerepoch,
        attributes=Attributes(flags=attributes.flags, xfrm=attributes.xfrm),
        mrenclave=mrenclave,
        keyid=keyid,
        cpusvn=cpusvn,
        miscselect=miscselect,
        configid=configid,
        configsvn=configsvn,
    )

"""The simulated SGX platform: its fused secrets, its configuration, and the file that keeps them.

A real SGX package holds random secrets blown into fuses at manufacture; every key the processor
hands out (EGETKEY) or uses (EREPORT's MAC, the provisioning keys) is derived from them. Here one
random 32-byte *fused secret* per platform plays that part, and every other secret is derived from
it with HKDF-SHA256 under a distinct label. The platform also has a configuration that Intel's
platforms expose in their PCK certificates and TCB Info: CPUSVN (16 TCB component SVNs), PCESVN,
PCE-ID, FMSPC, the quoting enclave's ISVSVN, the owner epoch, and the TCB levels the simulated
collateral will publish. Tests change it to make platforms that are out of date.

The file is JSON (``"format": "haven-sim-platform/1"``), per user, mode 0600, created on first use;
see ``docs/sim-platform.md``. ``SimPlatform.load_enclave`` is ECREATE/EADD/EEXTEND/EINIT (in
``haven.tee.sim.cpu``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from haven.errors import PlatformError
from haven.tee.sgx.image import EnclaveImage
from haven.tee.sgx.sigstruct import generate_signing_key
from haven.tee.sgx.structs import Attributes, Sigstruct
from haven.tee.sgx.tcb import TCB_STATUSES

if TYPE_CHECKING:
    from haven.tee.sim.cpu import SimEnclave

FORMAT = "haven-sim-platform/1"
ENV_PATH = "HAVEN_SIM_PLATFORM"
FUSED_SECRET_SIZE = 32
MAX_FILE_SIZE = 1 << 20  # a platform file is a few kilobytes; refuse to read anything absurd

# TCB component SVNs modelled on a 2024 Xeon Scalable platform's PCK certificate (components 0-1:
# microcode/SINIT ACM, 2-3 BIOS/ACM, 4 a TXT/SEAM field Intel reports as 255, 5-6 further firmware).
DEFAULT_CPUSVN = bytes([12, 12, 3, 3, 255, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0])
DEFAULT_PCESVN = 13  # the PCE's ISVSVN after the 2024 TCB recovery
DEFAULT_QE_ISVSVN = 8  # Intel's ECDSA QE ISVSVN in the 2024 QE Identity
DEFAULT_PCE_ID = 0  # every Intel platform reports PCE-ID 0000
# FMSPC (family-model-stepping + platform type + custom SKU, 6 bytes): ASCII "HAVEN" and 00, a value
# that no Intel part uses, so simulated evidence can never be mistaken for a real platform family.
HAVEN_FMSPC = b"HAVEN\x00"
DEFAULT_TCB_EVALUATION_DATA_NUMBER = 17
DEFAULT_TCB_DATE = "2025-01-01T00:00:00Z"

_ADVISORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# HKDF "info" namespaces: labels of derive_secret (the quoting side) can never name a fuse key.
_INFO_DERIVE = b"haven-sim derive_secret\x00"
_INFO_FUSE = b"haven-sim fuse\x00"


class FuseKey(enum.Enum):
    """The 128-bit base keys EGETKEY and EREPORT derive from (the SDM's "fuse" key inputs)."""

    SEAL = "seal-key-base"  # SEAL_KEY and PROVISION_SEAL_KEY
    REPORT = "report-key-base"  # REPORT_KEY: EREPORT's MAC key
    PROVISION = "provision-key-base"  # PROVISION_KEY: the provisioning fuses


def _int_in(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PlatformError(f"{name} must be an integer from {lo} to {hi}, not {value!r}")
    return value


def _bytes_of(name: str, value: object, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise PlatformError(f"{name} must be {size} bytes")
    return value


def _date(name: str, value: object) -> datetime:
    try:
        if not isinstance(value, str):
            raise ValueError
        return datetime.strptime(value, _DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise PlatformError(f"{name} must be a UTC time like 2025-01-01T00:00:00Z, not {value!r}") from None


@dataclass(frozen=True)
class TcbLevel:
    """One TCB level of the platform's TCB Info (collateral), as Intel's TCB Info v3 lists them."""

    sgx_components: tuple[int, ...]
    pcesvn: int
    status: str
    advisory_ids: tuple[str, ...] = ()
    tcb_date: str = DEFAULT_TCB_DATE

    def __post_init__(self) -> None:
        comps = self.sgx_components
        if not isinstance(comps, tuple) or len(comps) != 16:
            raise PlatformError("a TCB level needs 16 SGX TCB component SVNs")
        for i, svn in enumerate(comps):
            _int_in(f"TCB component {i}", svn, 0, 255)
        _int_in("TCB level PCESVN", self.pcesvn, 0, 0xFFFF)
        if self.status not in TCB_STATUSES:
            raise PlatformError(f"TCB status {self.status!r} is not one of {', '.join(TCB_STATUSES)}")
        if not isinstance(self.advisory_ids, tuple):
            raise PlatformError("advisory IDs must be a tuple of strings")
        for adv in self.advisory_ids:
            if not isinstance(adv, str) or not _ADVISORY.fullmatch(adv):
                raise PlatformError(f"advisory ID {adv!r} is not like INTEL-SA-00615")
        _date("TCB date", self.tcb_date)

    def to_json(self) -> dict[str, Any]:
        return {
            "sgx_components": list(self.sgx_components),
            "pcesvn": self.pcesvn,
            "status": self.status,
            "advisory_ids": list(self.advisory_ids),
            "tcb_date": self.tcb_date,
        }

    def covers(self, components: tuple[int, ...], pcesvn: int) -> bool:
        """Intel's TCB level matching: every platform SVN is at least this level's."""
        return all(p >= lv for p, lv in zip(components, self.sgx_components, strict=True)) and (
            pcesvn >= self.pcesvn
        )


@dataclass
class PlatformConfig:
    """What the platform reports about itself and what its collateral says about it."""

    cpusvn: bytes = DEFAULT_CPUSVN
    pcesvn: int = DEFAULT_PCESVN
    pce_id: int = DEFAULT_PCE_ID
    fmspc: bytes = HAVEN_FMSPC
    qe_isvsvn: int = DEFAULT_QE_ISVSVN
    # SGX OWNEREPOCH: set by the platform owner (BIOS); random on a new platform, like a fresh install.
    owner_epoch: bytes = field(default_factory=lambda: os.urandom(16))
    tcb_levels: tuple[TcbLevel, ...] = ()  # newest first; empty: one UpToDate level for this platform
    tcb_evaluation_data_number: int = DEFAULT_TCB_EVALUATION_DATA_NUMBER
    pck_revoked: bool = False

    def __post_init__(self) -> None:
        self._validate_own()
        if isinstance(self.tcb_levels, tuple) and not self.tcb_levels:
            self.tcb_levels = (TcbLevel(tuple(self.cpusvn), self.pcesvn, "UpToDate"),)
        self.validate()

    def _validate_own(self) -> None:
        _bytes_of("CPUSVN", self.cpusvn, 16)
        _int_in("PCESVN", self.pcesvn, 0, 0xFFFF)
        _int_in("PCE-ID", self.pce_id, 0, 0xFFFF)
        _bytes_of("FMSPC", self.fmspc, 6)
        _int_in("QE ISVSVN", self.qe_isvsvn, 0, 0xFFFF)
        _bytes_of("owner epoch", self.owner_epoch, 16)

    def validate(self) -> None:
        """Check every field (also before saving: the dataclass is mutable)."""
        self._validate_own()
        if not isinstance(self.tcb_levels, tuple) or not self.tcb_levels:
            raise PlatformError("the platform needs at least one TCB level")
        if not all(isinstance(lv, TcbLevel) for lv in self.tcb_levels):
            raise PlatformError("TCB levels must be TcbLevel values")
        _int_in("TCB evaluation data number", self.tcb_evaluation_data_number, 0, 0xFFFFFFFF)
        if not isinstance(self.pck_revoked, bool):
            raise PlatformError("pck_revoked must be true or false")

    @property
    def tcb_components(self) -> tuple[int, ...]:
        """The 16 SGX TCB component SVNs: byte i of CPUSVN, as the PCK certificate reports them."""
        return tuple(self.cpusvn)

    def tcb_status(self) -> str | None:
        """The status the first matching TCB level gives this platform; None if no level matches."""
        for level in self.tcb_levels:
            if level.covers(self.tcb_components, self.pcesvn):
                return level.status
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "cpusvn": self.cpusvn.hex(),
            "pcesvn": self.pcesvn,
            "pce_id": self.pce_id,
            "fmspc": self.fmspc.hex(),
            "qe_isvsvn": self.qe_isvsvn,
            "owner_epoch": self.owner_epoch.hex(),
            "tcb_levels": [lv.to_json() for lv in self.tcb_levels],
            "tcb_evaluation_data_number": self.tcb_evaluation_data_number,
            "pck_revoked": self.pck_revoked,
        }

    @classmethod
    def from_json(cls, obj: object) -> PlatformConfig:
        """Strict: exactly the known keys, each of its type (PlatformError naming the field)."""
        d = _object("config", obj, _CONFIG_KEYS)
        levels = d["tcb_levels"]
        if not isinstance(levels, list) or not levels:
            raise PlatformError("config.tcb_levels must be a non-empty list")
        parsed = []
        for i, raw in enumerate(levels):
            lv = _object(f"config.tcb_levels[{i}]", raw, _LEVEL_KEYS)
            comps, advs = lv["sgx_components"], lv["advisory_ids"]
            if not isinstance(comps, list) or not isinstance(advs, list):
                raise PlatformError(f"config.tcb_levels[{i}]: sgx_components and advisory_ids must be lists")
            parsed.append(TcbLevel(tuple(comps), lv["pcesvn"], lv["status"], tuple(advs), lv["tcb_date"]))
        return cls(
            cpusvn=_hex("config.cpusvn", d["cpusvn"], 16),
            pcesvn=d["pcesvn"],
            pce_id=d["pce_id"],
            fmspc=_hex("config.fmspc", d["fmspc"], 6),
            qe_isvsvn=d["qe_isvsvn"],
            owner_epoch=_hex("config.owner_epoch", d["owner_epoch"], 16),
            tcb_levels=tuple(parsed),
            tcb_evaluation_data_number=d["tcb_evaluation_data_number"],
            pck_revoked=d["pck_revoked"],
        )


_TOP_KEYS = frozenset({"format", "created", "fused_secret", "config", "qe_signing_key"})
_CONFIG_KEYS = frozenset(PlatformConfig.__dataclass_fields__)
_LEVEL_KEYS = frozenset({"sgx_components", "pcesvn", "status", "advisory_ids", "tcb_date"})


def _object(name: str, obj: object, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise PlatformError(f"{name} must be a JSON object")
    missing, unknown = keys - obj.keys(), obj.keys() - keys
    if missing:
        raise PlatformError(f"{name}: missing {', '.join(sorted(missing))}")
    if unknown:
        raise PlatformError(f"{name}: unknown field {', '.join(sorted(unknown))}")
    return obj


def _hex(name: str, value: object, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size:
        raise PlatformError(f"{name} must be {2 * size} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise PlatformError(f"{name} must be {2 * size} hex digits") from None


def _check_qe_key(key: object) -> rsa.RSAPrivateKey:
    # SGX accepts only RSA-3072 with public exponent 3 for SIGSTRUCT (SDM Vol. 3D, SIGSTRUCT table).
    if (
        not isinstance(key, rsa.RSAPrivateKey)
        or key.key_size != 3072
        or key.private_numbers().public_numbers.e != 3
    ):
        raise PlatformError("the QE signing key must be an RSA-3072 private key with exponent 3")
    return key


@lru_cache(maxsize=1)
def _boot_id() -> bytes:
    """Linux's per-boot random UUID; CR_REPORT_KEYID changes when it does, as SGX's does at power-on."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_bytes().strip()
    except OSError:
        return b"no-boot-id"  # not Linux: the KEYID then stays fixed for the platform file


class SimPlatform:
    """One simulated SGX platform, backed by its data file."""

    def __init__(
        self, path: Path, config: PlatformConfig, created: datetime, fused_secret: bytes, qe_key_pem: str
    ) -> None:
        self.path = path
        self.config = config
        self.created = created
        self._fused = fused_secret
        self._qe_key_pem = qe_key_pem
        self._qe_key: rsa.RSAPrivateKey | None = None
        self._fuse_keys = {k: self._hkdf(_INFO_FUSE + k.value.encode(), 16) for k in FuseKey}
        # CR_REPORT_KEYID: random at each power cycle on SGX (SDM Vol. 3D, EREPORT); here per boot.
        self.report_keyid = self._hkdf(_INFO_FUSE + b"report-keyid\x00" + _boot_id(), 32)

    def __repr__(self) -> str:  # never the secrets
        return f"SimPlatform({str(self.path)!r})"

    # -- the file ----------------------------------------------------------------------------------

    @classmethod
    def default_path(cls) -> Path:
        env = os.environ.get(ENV_PATH)
        if env:
            return Path(env)
        import platformdirs

        return Path(platformdirs.user_data_dir("haven")) / "sim-platform.json"

    @classmethod
    def open(cls, path: Path | None = None) -> SimPlatform:
        """The platform in ``path`` (default: ``default_path()``), created on first use."""
        path = Path(path) if path is not None else cls.default_path()
        try:
            return cls._read(path)
        except FileNotFoundError:
            pass
        try:
            return cls.create(path)
        except _AlreadyExists:
            return cls._read(path)  # another process created it first

    @classmethod
    def create(
        cls,
        path: Path,
        config: PlatformConfig | None = None,
        *,
        overwrite: bool = False,
        qe_signing_key: rsa.RSAPrivateKey | None = None,
    ) -> SimPlatform:
        """A new platform with fresh fused secrets; refuses to replace a file unless ``overwrite``.

        ``qe_signing_key`` (RSA-3072, e=3) is generated when not given.
        """
        path = Path(path)
        config = config if config is not None else PlatformConfig()
        config.validate()
        key = _check_qe_key(qe_signing_key if qe_signing_key is not None else generate_signing_key())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")
        created = datetime.now(UTC).replace(microsecond=0)
        platform = cls(path, config, created, os.urandom(FUSED_SECRET_SIZE), pem)
        platform._qe_key = key
        platform._write(overwrite=overwrite)
        return platform

    def save(self) -> None:
        """Persist configuration changes (atomic replace, mode 0600)."""
        self.config.validate()
        self._write(overwrite=True)

    def _write(self, *, overwrite: bool) -> None:
        try:
            self._write_file(overwrite=overwrite)
        except OSError as e:
            raise PlatformError(
                f"cannot write platform file {self.path} ({e.strerror or type(e).__name__})"
            ) from None

    def _write_file(self, *, overwrite: bool) -> None:
        doc = {
            "format": FORMAT,
            "created": self.created.strftime(_DATE_FORMAT),
            "fused_secret": self._fused.hex(),
            "config": self.config.to_json(),
            "qe_signing_key": self._qe_key_pem,
        }
        data = (json.dumps(doc, indent=2) + "\n").encode()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                if hasattr(os, "fchmod"):
                    os.fchmod(f.fileno(), 0o600)  # whatever the umask
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp, self.path)
            else:
                exists = _AlreadyExists(
                    f"platform file {self.path} already exists (use --force to replace it)"
                )
                try:
                    os.link(tmp, self.path)  # atomic create-if-absent
                except FileExistsError:
                    raise exists from None
                except OSError:
                    # A file system without hard links: check, then rename (a narrow race, no more).
                    if self.path.exists():
                        raise exists from None
                    os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def _read(cls, path: Path) -> SimPlatform:
        where = f"platform file {path}"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise PlatformError(f"{where}: cannot open it ({e.strerror or type(e).__name__})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise PlatformError(f"{where} is not a regular file")
            if os.name == "posix" and st.st_mode & 0o077:
                raise PlatformError(
                    f"{where} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                    f"it holds the platform's secrets: run chmod 600 {path}"
                )
            with os.fdopen(os.dup(fd), "rb") as f:
                raw = f.read(MAX_FILE_SIZE + 1)
        finally:
            os.close(fd)
        if len(raw) > MAX_FILE_SIZE:
            raise PlatformError(f"{where} is larger than {MAX_FILE_SIZE} bytes")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise PlatformError(f"{where} is not valid JSON ({type(e).__name__})") from None
        try:
            return cls._from_doc(path, doc)
        except PlatformError as e:
            raise PlatformError(f"{where}: {e}") from None

    @classmethod
    def _from_doc(cls, path: Path, doc: object) -> SimPlatform:
        if isinstance(doc, dict) and doc.get("format") != FORMAT:
            raise PlatformError(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
        d = _object("the document", doc, _TOP_KEYS)
        created = _date("created", d["created"])
        fused = _hex("fused_secret", d["fused_secret"], FUSED_SECRET_SIZE)
        pem = d["qe_signing_key"]
        if not isinstance(pem, str) or "-----BEGIN PRIVATE KEY-----" not in pem:
            raise PlatformError("qe_signing_key must be a PEM private key")
        return cls(path, PlatformConfig.from_json(d["config"]), created, fused, pem)

    # -- secrets -----------------------------------------------------------------------------------

    def _hkdf(self, info: bytes, length: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(self._fused)

    def derive_secret(self, label: str, length: int = 32) -> bytes:
        """HKDF-SHA256 of the fused secret for ``label`` (the quoting side's keys come from here)."""
        if not isinstance(label, str) or not label:
            raise ValueError("derive_secret needs a non-empty label")
        if not 1 <= length <= 255 * 32:
            raise ValueError("HKDF-SHA256 output length must be 1..8160 bytes")
        return self._hkdf(_INFO_DERIVE + label.encode("utf-8"), length)

    def fuse_key(self, which: FuseKey) -> bytes:
        """The 128-bit base key of one key family (used by the enclave instructions)."""
        return self._fuse_keys[which]

    def qe_signing_key(self) -> rsa.RSAPrivateKey:
        """The RSA-3072 (e=3) key that signs the simulated quoting enclave's SIGSTRUCT."""
        if self._qe_key is None:
            try:
                key = serialization.load_pem_private_key(self._qe_key_pem.encode("ascii"), password=None)
            except (ValueError, TypeError, UnicodeEncodeError):
                raise PlatformError(f"platform file {self.path}: qe_signing_key does not load") from None
            try:
                self._qe_key = _check_qe_key(key)
            except PlatformError as e:
                raise PlatformError(f"platform file {self.path}: {e}") from None
        return self._qe_key

    def qe_mrsigner(self) -> bytes:
        """MRSIGNER of the QE signing key: SHA-256 of the modulus as SIGSTRUCT stores it (little-endian)."""
        n = self.qe_signing_key().public_key().public_numbers().n
        return hashlib.sha256(n.to_bytes(384, "little")).digest()

    # -- enclaves ----------------------------------------------------------------------------------

    def load_enclave(
        self,
        image: EnclaveImage,
        sigstruct: Sigstruct,
        *,
        attributes: Attributes | None = None,
        miscselect: int | None = None,
        configid: bytes = bytes(64),
        configsvn: int = 0,
    ) -> SimEnclave:
        """ECREATE, EADD/EEXTEND every run, EINIT; EnclaveInitError with the reason if refused.

        ``attributes`` and ``miscselect`` are what the (untrusted) loader asks ECREATE for; by
        default the SIGSTRUCT's.
        """
        from haven.tee.sim.cpu import build_enclave

        return build_enclave(
            self,
            image,
            sigstruct,
            attributes=attributes,
            miscselect=miscselect,
            configid=configid,
            configsvn=configsvn,
        )


class _AlreadyExists(PlatformError):
    pass

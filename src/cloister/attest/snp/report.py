"""The SEV-SNP ATTESTATION_REPORT (SEV-SNP firmware ABI, AMD pub. 56860), parsed once into frozen dataclasses.

The report is 1184 bytes; the PSP signs bytes 0x000-0x29F. Reserved ranges must be zero and the signature must
be canonical, so a report has exactly one encoding and a digest over its bytes identifies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloister.errors import EvidenceMalformed

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
"""The signature covers ``report[0:SIGNED_SIZE]``."""
SUPPORTED_VERSIONS = range(2, 6)
"""v2 (SNP ABI 1.51), v3 adds CPUID family/model/stepping, v5 adds the mitigation vectors."""
ECDSA_P384_SHA384 = 1
SIGNING_KEYS = {0: "VCEK", 1: "VLEK", 7: "none"}

_COMPONENT_SIZE = 72
"""r and s are each 72 bytes little-endian, of which P-384 uses 48."""


# Offsets and sizes of the report's fields (ABI table "ATTESTATION_REPORT"), shared by the parser and the encoder.
_INTS = {
    "version": (0x00, 4),
    "guest_svn": (0x04, 4),
    "policy": (0x08, 8),
    "vmpl": (0x30, 4),
    "signature_algo": (0x34, 4),
    "current_tcb": (0x38, 8),
    "platform_info": (0x40, 8),
    "signer_info": (0x48, 4),
    "reported_tcb": (0x180, 8),
    "committed_tcb": (0x1E0, 8),
    "launch_tcb": (0x1F0, 8),
    "launch_mit_vector": (0x1F8, 8),
    "current_mit_vector": (0x200, 8),
}
_BYTES = {
    "family_id": (0x10, 16),
    "image_id": (0x20, 16),
    "report_data": (0x50, 64),
    "measurement": (0x90, 48),
    "host_data": (0xC0, 32),
    "id_key_digest": (0xE0, 48),
    "author_key_digest": (0x110, 48),
    "report_id": (0x140, 32),
    "report_id_ma": (0x160, 32),
    "chip_id": (0x1A0, 64),
}
_CPUID = 0x188
_CURRENT_VERSION = 0x1E8
_COMMITTED_VERSION = 0x1EC


def _int(data: bytes, name: str) -> int:
    offset, size = _INTS[name]
    return int.from_bytes(data[offset : offset + size], "little")


def _bytes(data: bytes, name: str) -> bytes:
    offset, size = _BYTES[name]
    return data[offset : offset + size]


def _zero(data: bytes, start: int, end: int, what: str) -> None:
    if any(data[start:end]):
        raise EvidenceMalformed(
            f"SNP report: reserved bytes 0x{start:x}-0x{end - 1:x} ({what}) are not zero; the file is not an "
            "unmodified attestation report",
            check="report_format",
        )


@dataclass(frozen=True)
class Tcb:
    """One TCB_VERSION: the security patch levels of each firmware component, decoded by the product's layout."""

    raw: int
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None
    """Turin only: the firmware's FMC (first mutable code) level."""

    @classmethod
    def decode(cls, raw: int, *, turin: bool) -> Tcb:
        b = raw.to_bytes(8, "little")
        if turin:
            return cls(raw, bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7], fmc=b[0])
        return cls(raw, bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])

    @classmethod
    def encode(cls, components: dict[str, int], *, turin: bool) -> Tcb:
        """The TCB with these components (``fmc`` only on Turin); the inverse of :meth:`decode`."""
        b = bytearray(8)
        positions = {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3} if turin else {"bootloader": 0, "tee": 1, "snp": 6}
        for name, value in components.items():
            index = 7 if name == "microcode" else positions.get(name)
            if index is None or not 0 <= value <= 0xFF:
                raise EvidenceMalformed(f"TCB component {name}={value} does not fit this product", check="tcb")
            b[index] = value
        return cls.decode(int.from_bytes(b, "little"), turin=turin)

    def components(self) -> dict[str, int]:
        parts = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}
        return parts if self.fmc is None else {"fmc": self.fmc, **parts}

    def to_json(self) -> dict[str, int]:
        return {"raw": self.raw, **self.components()}

    def __str__(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in self.components().items())


@dataclass(frozen=True)
class GuestPolicy:
    """The guest policy the VM was launched with (ABI table "GUEST_POLICY")."""

    raw: int

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return (self.raw >> 8) & 0xFF

    def _bit(self, bit: int) -> bool:
        return bool(self.raw >> bit & 1)

    @property
    def smt(self) -> bool:
        return self._bit(16)

    @property
    def migrate_ma(self) -> bool:
        return self._bit(18)

    @property
    def debug(self) -> bool:
        """The host may decrypt and alter the guest's memory: nothing it computes is confidential."""
        return self._bit(19)

    @property
    def single_socket(self) -> bool:
        return self._bit(20)

    def to_json(self) -> dict[str, Any]:
        names = ("cxl_allowed", "mem_aes_256_xts", "rapl_disabled", "ciphertext_hiding", "page_swap_disabled")
        return {
            "raw": self.raw,
            "abi": f"{self.abi_major}.{self.abi_minor}",
            "smt": self.smt,
            "migrate_ma": self.migrate_ma,
            "debug": self.debug,
            "single_socket": self.single_socket,
            **{name: self._bit(21 + index) for index, name in enumerate(names)},
        }


PLATFORM_INFO_BITS = {
    "smt_enabled": 0,
    "tsme_enabled": 1,
    "ecc_enabled": 2,
    "rapl_disabled": 3,
    "ciphertext_hiding_enabled": 4,
    "alias_check_complete": 5,
    "tio_enabled": 7,
}


@dataclass(frozen=True)
class FirmwareVersion:
    major: int
    minor: int
    build: int

    def to_json(self) -> dict[str, int]:
        return {"major": self.major, "minor": self.minor, "build": self.build}

    def __str__(self) -> str:
        return f"{self.major}.{self.minor} build {self.build}"


@dataclass(frozen=True)
class Report:
    """Every field of an attestation report. TCB values stay raw here: their layout depends on the product."""

    raw: bytes
    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    author_key_en: bool
    mask_chip_key: bool
    signing_key: str
    """``VCEK``, ``VLEK`` or ``none``."""
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid: tuple[int, int, int] | None
    """(family, model, stepping), v3 and later."""
    chip_id: bytes
    committed_tcb: int
    current_version: FirmwareVersion
    committed_version: FirmwareVersion
    launch_tcb: int
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int
    signature_s: int

    @property
    def signed(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    def to_json(self) -> dict[str, Any]:
        """The fields, JSON-safe (bytes as hex); TCBs as raw integers."""
        return {
            "version": self.version,
            "guest_svn": self.guest_svn,
            "policy": self.policy.to_json(),
            "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(),
            "vmpl": self.vmpl,
            "signature_algo": self.signature_algo,
            "current_tcb": self.current_tcb,
            "platform_info": {"raw": self.platform_info}
            | {name: bool(self.platform_info >> bit & 1) for name, bit in PLATFORM_INFO_BITS.items()},
            "author_key_en": self.author_key_en,
            "mask_chip_key": self.mask_chip_key,
            "signing_key": self.signing_key,
            "report_data": self.report_data.hex(),
            "measurement": self.measurement.hex(),
            "host_data": self.host_data.hex(),
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(),
            "report_id": self.report_id.hex(),
            "report_id_ma": self.report_id_ma.hex(),
            "reported_tcb": self.reported_tcb,
            "cpuid": None
            if self.cpuid is None
            else dict(zip(("family", "model", "stepping"), self.cpuid, strict=True)),
            "chip_id": self.chip_id.hex(),
            "committed_tcb": self.committed_tcb,
            "current_version": self.current_version.to_json(),
            "committed_version": self.committed_version.to_json(),
            "launch_tcb": self.launch_tcb,
            "launch_mit_vector": self.launch_mit_vector,
            "current_mit_vector": self.current_mit_vector,
        }


def _policy(raw: int) -> GuestPolicy:
    if not raw >> 17 & 1:
        raise EvidenceMalformed("SNP report: guest policy bit 17 is reserved and must be 1", check="report_format")
    if raw >> 26:
        raise EvidenceMalformed(f"SNP report: guest policy 0x{raw:x} sets reserved bits", check="report_format")
    return GuestPolicy(raw)


def _signature_component(data: bytes, offset: int) -> int:
    _zero(data, offset + 48, offset + _COMPONENT_SIZE, "signature padding")
    return int.from_bytes(data[offset : offset + 48], "little")


def _version(data: bytes, offset: int) -> FirmwareVersion:
    build, minor, major = data[offset : offset + 3]
    return FirmwareVersion(major, minor, build)


def parse_report(data: bytes) -> Report:
    """Parse a raw 1184-byte report; raise :class:`EvidenceMalformed` for anything a PSP would not produce."""
    if len(data) != REPORT_SIZE:
        raise EvidenceMalformed(
            f"SNP report: {len(data)} bytes, expected {REPORT_SIZE}; pass the raw report (for Azure, the HCL report "
            "read from the vTPM NV index 0x01400001)",
            check="report_format",
        )
    data = bytes(data)
    version = _int(data, "version")
    if version not in SUPPORTED_VERSIONS:
        raise EvidenceMalformed(
            f"SNP report version {version} is not supported (supported: 2 to 5)", check="report_format"
        )
    signature_algo = _int(data, "signature_algo")
    if signature_algo != ECDSA_P384_SHA384:
        raise EvidenceMalformed(
            f"SNP report: signature algorithm {signature_algo} is unknown (1 = ECDSA P-384 with SHA-384)",
            check="report_format",
        )
    signer_info = _int(data, "signer_info")
    signing_key = SIGNING_KEYS.get(signer_info >> 2 & 7)
    if signer_info >> 5 or signing_key is None:
        raise EvidenceMalformed(
            f"SNP report: signer info 0x{signer_info:x} uses reserved values", check="report_format"
        )
    has_cpuid, has_mitigations = version >= 3, version >= 5
    _zero(data, 0x4C, 0x50, "after the signer info")
    _zero(data, _CPUID + 3 if has_cpuid else _CPUID, 0x1A0, "after the reported TCB")
    _zero(data, _CURRENT_VERSION + 3, _CURRENT_VERSION + 4, "after the current version")
    _zero(data, _COMMITTED_VERSION + 3, _COMMITTED_VERSION + 4, "after the committed version")
    _zero(data, 0x208 if has_mitigations else 0x1F8, SIGNED_SIZE, "before the signature")
    _zero(data, SIGNED_SIZE + 2 * _COMPONENT_SIZE, REPORT_SIZE, "after the signature")
    return Report(
        raw=data,
        version=version,
        guest_svn=_int(data, "guest_svn"),
        policy=_policy(_int(data, "policy")),
        family_id=_bytes(data, "family_id"),
        image_id=_bytes(data, "image_id"),
        vmpl=_int(data, "vmpl"),
        signature_algo=signature_algo,
        current_tcb=_int(data, "current_tcb"),
        platform_info=_int(data, "platform_info"),
        author_key_en=bool(signer_info & 1),
        mask_chip_key=bool(signer_info & 2),
        signing_key=signing_key,
        report_data=_bytes(data, "report_data"),
        measurement=_bytes(data, "measurement"),
        host_data=_bytes(data, "host_data"),
        id_key_digest=_bytes(data, "id_key_digest"),
        author_key_digest=_bytes(data, "author_key_digest"),
        report_id=_bytes(data, "report_id"),
        report_id_ma=_bytes(data, "report_id_ma"),
        reported_tcb=_int(data, "reported_tcb"),
        cpuid=(data[_CPUID], data[_CPUID + 1], data[_CPUID + 2]) if has_cpuid else None,
        chip_id=_bytes(data, "chip_id"),
        committed_tcb=_int(data, "committed_tcb"),
        current_version=_version(data, _CURRENT_VERSION),
        committed_version=_version(data, _COMMITTED_VERSION),
        launch_tcb=_int(data, "launch_tcb"),
        launch_mit_vector=_int(data, "launch_mit_vector") if has_mitigations else None,
        current_mit_vector=_int(data, "current_mit_vector") if has_mitigations else None,
        signature_r=_signature_component(data, SIGNED_SIZE),
        signature_s=_signature_component(data, SIGNED_SIZE + _COMPONENT_SIZE),
    )


def encode_report(
    fields: dict[str, int | bytes],
    *,
    cpuid: tuple[int, int, int] | None = None,
    current_version: FirmwareVersion,
    committed_version: FirmwareVersion,
    signature: tuple[int, int] = (0, 0),
) -> bytes:
    """The ABI bytes of a report given its fields by the names of :class:`Report` (``signer_info`` as an integer).

    Used to rebuild a report from tools that export it field by field (virtee's JSON) and to sign test reports;
    the result still has to parse and verify like any other report.
    """
    data = bytearray(REPORT_SIZE)
    for name, value in fields.items():
        try:
            if name in _INTS:
                offset, size = _INTS[name]
                data[offset : offset + size] = int(value).to_bytes(size, "little")
            else:
                offset, size = _BYTES[name]
                if not isinstance(value, bytes) or len(value) != size:
                    raise ValueError(f"needs {size} bytes")
                data[offset : offset + size] = value
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise EvidenceMalformed(f"SNP report field {name}: {exc}", check="report_format") from None
    try:
        if cpuid is not None:
            data[_CPUID : _CPUID + 3] = bytes(cpuid)
        for offset, version in ((_CURRENT_VERSION, current_version), (_COMMITTED_VERSION, committed_version)):
            data[offset : offset + 3] = bytes((version.build, version.minor, version.major))
        for index, component in enumerate(signature):
            start = SIGNED_SIZE + index * _COMPONENT_SIZE
            data[start : start + _COMPONENT_SIZE] = component.to_bytes(_COMPONENT_SIZE, "little")
    except (ValueError, OverflowError) as exc:
        raise EvidenceMalformed(f"SNP report: {exc}", check="report_format") from None
    return bytes(data)

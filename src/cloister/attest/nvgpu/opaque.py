"""NVIDIA's opaque data in the SPDM MEASUREMENTS response: signed (type, length, value) fields.

They carry what the measurement blocks do not: the driver and VBIOS versions (which pick the RIMs to compare
against), the FWID that ties the report to the leaf certificate, and the board's identity.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from cloister.errors import EvidenceMalformed

DRIVER_VERSION = 3
VBIOS_VERSION = 6
NVDEC0_STATUS = 11
MSRSCNT = 12
FWID = 20
FWID_SIZE = 48

FIELD_NAMES = {
    1: "CERT_ISSUER_NAME",
    2: "CERT_AUTHORITY_KEY_IDENTIFIER",
    3: "DRIVER_VERSION",
    4: "GPU_INFO",
    5: "SKU",
    6: "VBIOS_VERSION",
    7: "MANUFACTURER_ID",
    8: "TAMPER_DETECTION",
    9: "SMC",
    10: "VPR",
    11: "NVDEC0_STATUS",
    12: "MSRSCNT",
    13: "CPRINFO",
    14: "BOARD_ID",
    15: "CHIP_SKU",
    16: "CHIP_SKU_MOD",
    17: "PROJECT",
    18: "PROJECT_SKU",
    19: "PROJECT_SKU_MOD",
    20: "FWID",
    21: "PROTECTED_PCIE_STATUS",
    22: "SWITCH_PDI",
    23: "FLOORSWEPT_PORTS",
    24: "POSITION_ID",
    25: "LOCK_SWITCH_STATUS",
    32: "GPU_LINK_CONN",
    33: "SYS_ENABLE_STATUS",
    34: "OPAQUE_DATA_VERSION",
    35: "CHIP_INFO",
    36: "FEATURE_FLAG",
}
_PRINTABLE = frozenset(string.printable.encode()) - frozenset(b"\t\n\r\x0b\x0c")


def _malformed(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"GPU opaque data: {message}", check="opaque_data")


def field_name(type_id: int) -> str:
    return FIELD_NAMES.get(type_id, f"TYPE_{type_id}")


@dataclass(frozen=True)
class OpaqueData:
    fields: tuple[tuple[int, bytes], ...]
    """Every (type, value) in report order."""
    driver_version: str
    vbios_version: str
    fwid: bytes | None
    """Absent from reports of drivers before r550."""
    nvdec0_status: int | None
    measurement_counts: tuple[int, ...]

    def get(self, type_id: int) -> bytes | None:
        return next((value for kind, value in self.fields if kind == type_id), None)

    def named(self) -> dict[str, str]:
        """Each field by name, value in hex: the board identity claims (SKU, project, …) for people and policies."""
        return {field_name(kind): value.hex() for kind, value in self.fields}


def format_vbios_version(value: bytes) -> str:
    """NVIDIA's VBIOS version text, e.g. ``96.00.9F.00.01``, from the 8-byte little-endian field."""
    if len(value) != 8:
        raise _malformed(f"the VBIOS version field is {len(value)} bytes, not 8")
    return ".".join(f"{value[i]:02X}" for i in (3, 2, 1, 0, 4))


def _driver_version(value: bytes) -> str:
    text = value.rstrip(b"\x00")
    if not text or not set(text) <= _PRINTABLE:
        raise _malformed("the driver version is not printable text")
    return text.decode("ascii")


def _single(fields: dict[int, bytes], type_id: int, size: int) -> bytes | None:
    value = fields.get(type_id)
    if value is not None and len(value) != size:
        raise _malformed(f"{field_name(type_id)} is {len(value)} bytes, not {size}")
    return value


def parse_opaque(data: bytes) -> OpaqueData:
    """Parse the TLVs; each type at most once, and the driver and VBIOS versions must be present."""
    items: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise _malformed(f"truncated field header at byte {offset}")
        kind = int.from_bytes(data[offset : offset + 2], "little")
        size = int.from_bytes(data[offset + 2 : offset + 4], "little")
        if offset + 4 + size > len(data):
            raise _malformed(f"{field_name(kind)} runs past the end of the opaque data")
        items.append((kind, bytes(data[offset + 4 : offset + 4 + size])))
        offset += 4 + size
    fields = dict(items)
    if len(fields) != len(items):
        raise _malformed("a field appears twice, so its meaning is ambiguous")
    if DRIVER_VERSION not in fields or VBIOS_VERSION not in fields:
        raise _malformed("the driver or VBIOS version is missing; every NVIDIA GPU report carries both")
    counts = fields.get(MSRSCNT, b"")
    if len(counts) % 4:
        raise _malformed("MSRSCNT is not a list of 32-bit counts")
    nvdec0 = _single(fields, NVDEC0_STATUS, 1)
    return OpaqueData(
        fields=tuple(items),
        driver_version=_driver_version(fields[DRIVER_VERSION]),
        vbios_version=format_vbios_version(fields[VBIOS_VERSION]),
        fwid=_single(fields, FWID, FWID_SIZE),
        nvdec0_status=nvdec0[0] if nvdec0 is not None else None,
        measurement_counts=tuple(int.from_bytes(counts[i : i + 4], "little") for i in range(0, len(counts), 4)),
    )

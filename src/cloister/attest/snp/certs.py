"""AMD certificates: the VCEK/VLEK extensions that bind a key to a chip and a TCB, and the ways chains travel.

A VCEK is issued per chip (hwID) and per TCB (the SPL extensions); a VLEK is issued to a cloud provider and carries
the TCB but no hwID. Chains travel as AMD KDS PEM bundles, single DER certificates, or the GUID-indexed certificate
table the guest gets next to the report (SNP extended guest request, configfs-tsm ``auxblob``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cloister.attest.der import (
    IA5_STRING,
    INTEGER,
    OCTET_STRING,
    Certificate,
    decode_integer,
    expect,
    parse_certificate,
    parse_pem_certificates,
    read_tlv,
)
from cloister.attest.snp.product import Product
from cloister.errors import EvidenceMalformed

_AMD = "1.3.6.1.4.1.3704.1"
OID_PRODUCT_NAME = f"{_AMD}.2"
OID_HWID = f"{_AMD}.4"
OID_CSP_ID = f"{_AMD}.5"
SPL_OIDS = {
    "bootloader": f"{_AMD}.3.1",
    "tee": f"{_AMD}.3.2",
    "snp": f"{_AMD}.3.3",
    "microcode": f"{_AMD}.3.8",
    "fmc": f"{_AMD}.3.9",
}
"""The TCB extensions (security patch levels), named like :class:`~cloister.attest.snp.report.Tcb` fields."""
KINDS = {"SEV-VCEK": "VCEK", "SEV-VLEK": "VLEK"}
_HWID_SIZES = (64, 8)  # Milan/Genoa: the 64-byte CHIP_ID; Turin: an 8-byte ID
_TABLE_ENTRY = 24


@dataclass(frozen=True)
class EndorsementKey:
    """A VCEK or VLEK certificate with its AMD extensions decoded. Not trusted until its chain verifies."""

    certificate: Certificate
    kind: str
    """``VCEK`` or ``VLEK``."""
    product: Product | None
    spls: tuple[tuple[str, int], ...]
    """(component, level) for every TCB extension present."""
    hwid: bytes | None
    csp_id: str | None


def _extension_der(cert: Certificate, oid: str, tag: int) -> bytes | None:
    ext = cert.extension(oid)
    if ext is None:
        return None
    item, end = read_tlv(ext.value, what=f"{cert} extension {oid}")
    if end != len(ext.value):
        raise EvidenceMalformed(f"{cert}: extension {oid} has trailing bytes", check="der")
    return expect(item, tag, f"{cert} extension {oid}").value


def _hwid(cert: Certificate) -> bytes | None:
    """The hwID extension, raw (what KDS issues) or wrapped in an OCTET STRING (seen in newer tooling)."""
    ext = cert.extension(OID_HWID)
    if ext is None:
        return None
    value = ext.value
    if len(value) not in _HWID_SIZES:
        item, end = read_tlv(value, what=f"{cert} hwID")
        value = expect(item, OCTET_STRING, f"{cert} hwID").value if end == len(value) else b""
    if len(value) not in _HWID_SIZES:
        raise EvidenceMalformed(f"{cert}: the hwID extension is neither 64 nor 8 bytes", check="der")
    return value


def endorsement_key(cert: Certificate) -> EndorsementKey:
    """Decode the AMD extensions of a VCEK or VLEK; raise :class:`EvidenceMalformed` if they are not well formed."""
    kind = KINDS.get(cert.subject.common_name)
    if kind is None:
        raise EvidenceMalformed(f"{cert} is not a VCEK or VLEK (subject CN SEV-VCEK / SEV-VLEK)", check="der")
    spls = []
    for name, oid in SPL_OIDS.items():
        value = _extension_der(cert, oid, INTEGER)
        if value is not None:
            level = decode_integer(value)
            if not 0 <= level <= 0xFF:
                raise EvidenceMalformed(f"{cert}: TCB extension {name}={level} is out of range", check="der")
            spls.append((name, level))
    name_der = _extension_der(cert, OID_PRODUCT_NAME, IA5_STRING)
    csp_der = _extension_der(cert, OID_CSP_ID, IA5_STRING)
    return EndorsementKey(
        certificate=cert,
        kind=kind,
        product=None if name_der is None else Product.parse(name_der.decode("ascii", errors="replace")),
        spls=tuple(spls),
        hwid=_hwid(cert),
        csp_id=None if csp_der is None else csp_der.decode("ascii", errors="replace"),
    )


def _cert_table(data: bytes) -> list[bytes]:
    """The certificates of a GHCB certificate table: (GUID, offset, length) entries ending with an all-zero one."""
    ders: list[bytes] = []
    position = 0
    while True:
        entry = data[position : position + _TABLE_ENTRY]
        if len(entry) < _TABLE_ENTRY:
            raise EvidenceMalformed("certificate table: no terminating all-zero entry", check="certificates")
        position += _TABLE_ENTRY
        if not any(entry):
            return ders
        offset, length = int.from_bytes(entry[16:20], "little"), int.from_bytes(entry[20:24], "little")
        if offset < position or length == 0 or offset + length > len(data):
            raise EvidenceMalformed(
                f"certificate table: entry {len(ders)} points outside the table data", check="certificates"
            )
        ders.append(data[offset : offset + length])


def load_certificates(data: bytes) -> list[bytes]:
    """The DER certificates in a PEM bundle, a single DER certificate, or a GHCB certificate table."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        return [cert.der for cert in parse_pem_certificates(data)]
    if data[:1] == b"\x30":
        return [parse_certificate(data).der]
    ders = _cert_table(data)
    if not ders:
        raise EvidenceMalformed(
            "no certificates found: expected a PEM bundle, a DER certificate or a certificate table",
            check="certificates",
        )
    for der in ders:
        parse_certificate(der)
    return ders

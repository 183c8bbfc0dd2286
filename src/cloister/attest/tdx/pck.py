"""PCK certificates: strict PEM chain reading and the Intel SGX extensions (OID 1.2.840.113741.1.13.1).

The PCK leaf's extensions say which platform signed the quote (FMSPC, PCE id) and at which TCB it was certified
(16 CPU SVN components and the PCE SVN): TCB level evaluation compares exactly these against Intel's TCB info.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloister.attest.der import (
    BOOLEAN,
    INTEGER,
    OCTET_STRING,
    OID,
    SEQUENCE,
    Certificate,
    Tlv,
    children,
    children_exactly,
    decode_integer,
    decode_oid,
    expect,
    parse_certificate,
    parse_pem_certificates,
    read_tlv,
)
from cloister.errors import EvidenceMalformed

SGX_EXTENSIONS = "1.2.840.113741.1.13.1"
_PPID, _TCB, _PCEID, _FMSPC, _SGX_TYPE, _INSTANCE, _CONFIG = (f"{SGX_EXTENSIONS}.{n}" for n in range(1, 8))
_ENUMERATED = 0x0A
_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)

PCK_LEAF_NAME = "Intel SGX PCK Certificate"
PCK_CA_NAMES = frozenset({"Intel SGX PCK Platform CA", "Intel SGX PCK Processor CA"})
TCB_SIGNING_NAME = "Intel SGX TCB Signing"


def read_certificates(data: bytes, *, what: str, check: str) -> tuple[Certificate, ...]:
    """Certificates from one DER certificate or a PEM bundle; only whitespace and NUL may surround PEM blocks."""
    try:
        if data[:1] == b"\x30":
            return _der_certificates(data, what)
        text = data.decode("ascii")
        if _PEM_BLOCK.sub("", text).strip(" \t\r\n\0"):
            raise EvidenceMalformed(f"{what}: text outside the PEM certificate blocks", check=check)
        certificates = tuple(parse_pem_certificates(text))
    except UnicodeDecodeError:
        raise EvidenceMalformed(f"{what}: not PEM text or a DER certificate", check=check) from None
    except EvidenceMalformed as exc:
        raise EvidenceMalformed(f"{what}: {exc.message}", check=check) from None
    if not certificates:
        raise EvidenceMalformed(f"{what}: no certificate found", check=check)
    return certificates


def _der_certificates(data: bytes, what: str) -> tuple[Certificate, ...]:
    certificates, offset = [], 0
    while offset < len(data):
        item, offset = read_tlv(data, offset, what=what)
        certificates.append(parse_certificate(item.encoded))
    return tuple(certificates)


@dataclass(frozen=True)
class PckInfo:
    """What the PCK certificate says about the platform that signed the QE report."""

    ppid: bytes
    tcb_components: tuple[int, ...]
    """The 16 SGX TCB component SVNs the PCK was issued for."""
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None


def _malformed(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"PCK certificate SGX extensions: {message}", check="pck_extensions")


def _pairs(value: bytes) -> dict[str, Tlv]:
    """A SEQUENCE OF SEQUENCE {OID, value} as a dict; duplicates are refused."""
    found: dict[str, Tlv] = {}
    for item in children(value):
        parts = children_exactly(expect(item, SEQUENCE, "SGX extension entry").value, 2, what="SGX extension entry")
        oid = decode_oid(expect(parts[0], OID, "SGX extension id").value)
        if oid in found:
            raise _malformed(f"{oid} appears twice")
        found[oid] = parts[1]
    return found


def _octets(entries: dict[str, Tlv], oid: str, size: int | None, name: str) -> bytes:
    if oid not in entries:
        raise _malformed(f"{name} is missing")
    value = expect(entries[oid], OCTET_STRING, name).value
    if size is not None and len(value) != size:
        raise _malformed(f"{name} is {len(value)} bytes, expected {size}")
    return value


def _small_int(item: Tlv, name: str, limit: int) -> int:
    value = decode_integer(expect(item, INTEGER, name).value)
    if not 0 <= value <= limit:
        raise _malformed(f"{name} {value} is out of range")
    return value


def parse_sgx_extensions(cert: Certificate) -> PckInfo:
    """Read the SGX extensions of a PCK leaf certificate."""
    extension = cert.extension(SGX_EXTENSIONS)
    if extension is None:
        raise _malformed(f"{cert} has no SGX extensions: it is not a PCK certificate")
    try:
        top, end = read_tlv(extension.value, what="SGX extensions")
        if end != len(extension.value):
            raise _malformed("trailing bytes")
        entries = _pairs(expect(top, SEQUENCE, "SGX extensions").value)
        if _TCB not in entries or _SGX_TYPE not in entries:
            raise _malformed("the TCB or SGX type entry is missing")
        tcb = _pairs(expect(entries[_TCB], SEQUENCE, "TCB").value)
        components = []
        for index in range(1, 17):
            oid = f"{_TCB}.{index}"
            if oid not in tcb:
                raise _malformed(f"TCB component {index} is missing")
            components.append(_small_int(tcb[oid], f"TCB component {index}", 0xFF))
        if f"{_TCB}.17" not in tcb:
            raise _malformed("PCESVN is missing")
        sgx_type = entries[_SGX_TYPE]
        if sgx_type.tag != _ENUMERATED or len(sgx_type.value) != 1:
            raise _malformed("SGX type is not a one-byte ENUMERATED")
        instance = _octets(entries, _INSTANCE, 16, "platform instance id") if _INSTANCE in entries else None
        if _CONFIG in entries:  # multi-package platforms: three BOOLEAN flags; checked for shape only
            for flag in _pairs(expect(entries[_CONFIG], SEQUENCE, "configuration").value).values():
                expect(flag, BOOLEAN, "configuration flag")
        return PckInfo(
            ppid=_octets(entries, _PPID, 16, "PPID"),
            tcb_components=tuple(components),
            pce_svn=_small_int(tcb[f"{_TCB}.17"], "PCESVN", 0xFFFF),
            cpu_svn=_octets(tcb, f"{_TCB}.18", 16, "CPUSVN"),
            pce_id=_octets(entries, _PCEID, 2, "PCE id"),
            fmspc=_octets(entries, _FMSPC, 6, "FMSPC"),
            sgx_type=sgx_type.value[0],
            platform_instance_id=instance,
        )
    except EvidenceMalformed as exc:
        if exc.check == "pck_extensions":
            raise
        raise _malformed(exc.message) from None

"""A small, strict DER reader for X.509 certificates, enough to verify vendor attestation chains.

Why not ``cryptography.x509``: AMD's VCEK/VLEK certificates have serial number 0, which RFC 5280 forbids and which
``cryptography`` already warns about and will refuse. Attestation must keep working with the certificates vendors
actually issue, so certificates are parsed here and only the public-key primitives come from ``cryptography``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cloister.errors import EvidenceMalformed

# Universal tags used by certificates.
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
IA5_STRING = 0x16
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
SET = 0x31

OID_COMMON_NAME = "2.5.4.3"
_STRING_TAGS = (UTF8_STRING, PRINTABLE_STRING, IA5_STRING, 0x14, 0x1E)


@dataclass(frozen=True)
class Tlv:
    """One DER element: its tag, its value bytes, and the whole encoding (for signed regions)."""

    tag: int
    value: bytes
    encoded: bytes


def read_tlv(data: bytes, offset: int = 0, *, what: str = "DER") -> tuple[Tlv, int]:
    """Read one element at ``offset``; return it and the offset just after it."""
    if offset + 2 > len(data):
        raise EvidenceMalformed(f"{what}: truncated element header at byte {offset}", check="der")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise EvidenceMalformed(f"{what}: multi-byte tags are not used in certificates", check="der")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise EvidenceMalformed(f"{what}: bad length encoding at byte {offset}", check="der")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise EvidenceMalformed(f"{what}: non-minimal length at byte {offset}", check="der")
        pos += count
    end = pos + length
    if end > len(data):
        raise EvidenceMalformed(f"{what}: element at byte {offset} runs past the end of the data", check="der")
    return Tlv(tag, data[pos:end], data[offset:end]), end


def children(value: bytes, *, what: str = "DER") -> list[Tlv]:
    """The elements inside a constructed value, which must be consumed exactly."""
    items = []
    offset = 0
    while offset < len(value):
        item, offset = read_tlv(value, offset, what=what)
        items.append(item)
    return items


def children_exactly(value: bytes, count: int, *, what: str) -> list[Tlv]:
    """The elements inside a constructed value that must hold exactly ``count`` of them."""
    items = children(value, what=what)
    if len(items) != count:
        raise EvidenceMalformed(f"{what}: expected {count} elements, found {len(items)}", check="der")
    return items


def expect(item: Tlv, tag: int, what: str) -> Tlv:
    if item.tag != tag:
        raise EvidenceMalformed(f"{what}: expected tag 0x{tag:02x}, found 0x{item.tag:02x}", check="der")
    return item


def decode_oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise EvidenceMalformed("bad object identifier", check="der")
    arcs: list[int] = []
    current = 0
    for byte in value:
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(current)
            current = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


def decode_integer(value: bytes) -> int:
    if not value:
        raise EvidenceMalformed("empty INTEGER", check="der")
    return int.from_bytes(value, "big", signed=True)


def decode_time(item: Tlv) -> datetime:
    text = item.value.decode("ascii", errors="replace")
    try:
        if item.tag == UTC_TIME:
            parsed = datetime.strptime(text, "%y%m%d%H%M%SZ")
            if parsed.year >= 2050:  # RFC 5280: UTCTime years 50-99 are 19xx
                parsed = parsed.replace(year=parsed.year - 100)
        elif item.tag == GENERALIZED_TIME:
            parsed = datetime.strptime(text, "%Y%m%d%H%M%SZ")
        else:
            raise ValueError("not a time")
    except ValueError:
        raise EvidenceMalformed(f"bad certificate time {text!r}", check="der") from None
    return parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AlgorithmIdentifier:
    oid: str
    parameters: bytes
    """The DER of the parameters (empty when absent)."""


def decode_algorithm(item: Tlv) -> AlgorithmIdentifier:
    parts = children(expect(item, SEQUENCE, "algorithm").value)
    if not parts or len(parts) > 2:
        raise EvidenceMalformed("bad AlgorithmIdentifier", check="der")
    oid = decode_oid(expect(parts[0], OID, "algorithm oid").value)
    return AlgorithmIdentifier(oid, parts[1].encoded if len(parts) == 2 else b"")


@dataclass(frozen=True)
class Name:
    """A distinguished name: compared by its exact DER, shown by its common name."""

    der: bytes
    attributes: tuple[tuple[str, str], ...]

    @property
    def common_name(self) -> str:
        for oid, value in self.attributes:
            if oid == OID_COMMON_NAME:
                return value
        return ""

    def __str__(self) -> str:
        return self.common_name or ", ".join(f"{oid}={value}" for oid, value in self.attributes)


def decode_name(item: Tlv) -> Name:
    attributes = []
    for rdn in children(expect(item, SEQUENCE, "name").value):
        for attribute in children(expect(rdn, SET, "name RDN").value):
            oid_item, value_item = children_exactly(
                expect(attribute, SEQUENCE, "name attribute").value, 2, what="name attribute"
            )
            value = value_item.value.decode("utf-8", errors="replace") if value_item.tag in _STRING_TAGS else ""
            attributes.append((decode_oid(oid_item.value), value))
    return Name(item.encoded, tuple(attributes))


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool
    value: bytes
    """The content of extnValue's OCTET STRING."""


@dataclass(frozen=True)
class Certificate:
    """A parsed X.509 certificate. Nothing here is trusted until :mod:`cloister.attest.pki` verifies it."""

    der: bytes
    tbs: bytes
    serial: int
    signature_algorithm: AlgorithmIdentifier
    signature: bytes
    issuer: Name
    subject: Name
    not_before: datetime
    not_after: datetime
    public_key_info: bytes
    """SubjectPublicKeyInfo DER, loadable with ``load_der_public_key``."""
    extensions: tuple[Extension, ...] = field(default=())

    def extension(self, oid: str) -> Extension | None:
        for ext in self.extensions:
            if ext.oid == oid:
                return ext
        return None

    def __str__(self) -> str:
        return str(self.subject)


def parse_certificate(data: bytes) -> Certificate:
    """Parse one DER certificate; trailing bytes are refused."""
    top, end = read_tlv(data, what="certificate")
    if end != len(data):
        raise EvidenceMalformed("certificate: trailing bytes after the certificate", check="der")
    parts = children(expect(top, SEQUENCE, "certificate").value)
    if len(parts) != 3:
        raise EvidenceMalformed("certificate: expected tbsCertificate, signatureAlgorithm, signature", check="der")
    tbs_item, algorithm_item, signature_item = parts
    signature_bits = expect(signature_item, BIT_STRING, "signature").value
    if not signature_bits or signature_bits[0] != 0:
        raise EvidenceMalformed("certificate: signature BIT STRING has unused bits", check="der")
    fields = children(expect(tbs_item, SEQUENCE, "tbsCertificate").value)
    index = 1 if fields and fields[0].tag == 0xA0 else 0
    if len(fields) < index + 6:
        raise EvidenceMalformed("certificate: tbsCertificate is missing fields", check="der")
    serial = decode_integer(expect(fields[index], INTEGER, "serial").value)
    inner_algorithm = decode_algorithm(fields[index + 1])
    outer_algorithm = decode_algorithm(algorithm_item)
    if inner_algorithm != outer_algorithm:
        raise EvidenceMalformed("certificate: the two signature algorithm fields differ", check="der")
    validity = children(expect(fields[index + 3], SEQUENCE, "validity").value)
    if len(validity) != 2:
        raise EvidenceMalformed("certificate: bad validity", check="der")
    extensions: list[Extension] = []
    for extra in fields[index + 6 :]:
        if extra.tag != 0xA3:
            continue  # issuer/subject unique ids: unused here
        (sequence,) = children_exactly(extra.value, 1, what="extensions")
        for ext in children(expect(sequence, SEQUENCE, "extensions").value):
            ext_parts = children(expect(ext, SEQUENCE, "extension").value)
            if len(ext_parts) not in (2, 3):
                raise EvidenceMalformed("certificate: an extension is not (id, [critical], value)", check="der")
            critical = len(ext_parts) == 3 and expect(ext_parts[1], BOOLEAN, "critical").value == b"\xff"
            extensions.append(
                Extension(
                    decode_oid(expect(ext_parts[0], OID, "extension id").value),
                    critical,
                    expect(ext_parts[-1], OCTET_STRING, "extension value").value,
                )
            )
    return Certificate(
        der=top.encoded,
        tbs=tbs_item.encoded,
        serial=serial,
        signature_algorithm=outer_algorithm,
        signature=signature_bits[1:],
        issuer=decode_name(fields[index + 2]),
        subject=decode_name(fields[index + 4]),
        not_before=decode_time(validity[0]),
        not_after=decode_time(validity[1]),
        public_key_info=expect(fields[index + 5], SEQUENCE, "subjectPublicKeyInfo").encoded,
        extensions=tuple(extensions),
    )


def parse_pem_certificates(text: bytes | str) -> list[Certificate]:
    """Every certificate in a PEM bundle, in order."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    certificates = []
    rest = text
    while begin in rest:
        start = rest.index(begin) + len(begin)
        stop = rest.find(end, start)
        if stop < 0:
            raise EvidenceMalformed("PEM: a certificate has no END line", check="pem")
        try:
            der = base64.b64decode("".join(rest[start:stop].split()), validate=True)
        except ValueError:
            raise EvidenceMalformed("PEM: certificate body is not base64", check="pem") from None
        certificates.append(parse_certificate(der))
        rest = rest[stop + len(end) :]
    return certificates

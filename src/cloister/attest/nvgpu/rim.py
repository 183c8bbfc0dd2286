"""Reference Integrity Manifests (RIMs): NVIDIA's signed golden measurements for a driver or a VBIOS.

A RIM is a SWID tag (ISO 19770-2 XML) signed with XML-DSig by a leaf that chains to the NVIDIA CoRIM signing root.
Its ``Resource`` elements list, per measurement index, whether the index is active and which values are allowed;
RIM index ``i`` is SPDM measurement block ``i + 1``. A report whose active measurements all match the driver RIM and
the VBIOS RIM runs production firmware, which is also what NVIDIA means by "debug disabled".
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import SignXMLException
from signxml.verifier import SignatureConfiguration, XMLVerifier

from cloister.attest.der import Certificate, parse_certificate
from cloister.attest.nvgpu.chain import ALWAYS, ChainCache, anchored, window
from cloister.attest.nvgpu.opaque import OpaqueData
from cloister.attest.nvgpu.spdm import Report
from cloister.attest.roots import NVIDIA_CORIM_SIGNING_ROOT_CA
from cloister.errors import CollateralInvalid, EvidenceMalformed

SWID = "{http://standards.iso.org/iso/19770/-2/2015/schema.xsd}"
TCG_RIM = "{https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/}"
HASH = "{http://www.w3.org/2001/04/xmlenc#sha384}"
DSIG = "{http://www.w3.org/2000/09/xmldsig#}"
NVDEC0_INDEX = 35
"""The NVDEC0 engine's measurement: NVIDIA compares it only while NVDEC0 is enabled."""
NVDEC0_ENABLED, NVDEC0_DISABLED = 0xAA, 0x55


def _malformed(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"RIM: {message}", check="rim")


@dataclass(frozen=True)
class GoldenMeasurement:
    index: int
    name: str
    active: bool
    alternatives: tuple[bytes, ...]
    """The values any one of which the GPU may report at block ``index + 1``."""


@dataclass(frozen=True)
class Rim:
    tag_id: str
    product: str
    """The chip it describes, e.g. ``GH100``."""
    version: str
    """``colloquialVersion``: a driver version (``550.144.03``) or a VBIOS version (``96.00.5E.00.01``)."""
    manufacturer_id: str
    measurements: tuple[GoldenMeasurement, ...]
    certificates: tuple[Certificate, ...] = field(repr=False)
    """The signing chain from the signature's KeyInfo, leaf first."""
    xml: bytes = field(repr=False)

    @property
    def active(self) -> tuple[GoldenMeasurement, ...]:
        return tuple(golden for golden in self.measurements if golden.active)


def _parse_xml(xml: bytes) -> ET.Element:
    """Parse as UTF-8 text (whatever the document declares), refusing DTDs, so no entity can expand."""
    try:
        text = xml.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _malformed("not UTF-8 text; fetch the RIM again") from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise _malformed("document type declarations are not allowed")
    try:
        root = ET.fromstring(text)  # noqa: S314 -- text input is read as UTF-8 and DTDs are refused above
    except (ET.ParseError, ValueError):
        raise _malformed("not well-formed XML; fetch the RIM again") from None
    if root.tag != SWID + "SoftwareIdentity":
        raise _malformed(f"the root element is {root.tag}, not a SWID SoftwareIdentity")
    return root


def _attribute(element: ET.Element, name: str) -> str:
    value = element.get(name)
    if value is None:
        raise _malformed(f"{element.tag.rsplit('}', 1)[-1]} has no {name.rsplit('}', 1)[-1]} attribute")
    return value


def _number(element: ET.Element, name: str, low: int, high: int) -> int:
    text = _attribute(element, name)
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
        raise _malformed(f"{name} {text!r} is not a number from {low} to {high}")
    return int(text)


def _golden(resource: ET.Element) -> GoldenMeasurement:
    index = _number(resource, "index", 0, 254)
    active = _attribute(resource, "active")
    if active not in ("True", "False"):
        raise _malformed(f"measurement {index}: active is {active!r}, not True or False")
    size = _number(resource, "size", 1, 64)
    values = []
    for k in range(_number(resource, "alternatives", 1, 64)):
        try:
            value = bytes.fromhex(_attribute(resource, f"{HASH}Hash{k}"))
        except ValueError:
            raise _malformed(f"measurement {index}: Hash{k} is not hex") from None
        if len(value) != size:
            raise _malformed(f"measurement {index}: Hash{k} is {len(value)} bytes, not {size}")
        values.append(value)
    return GoldenMeasurement(index, resource.get("name", ""), active == "True", tuple(values))


def _content(root: ET.Element) -> tuple[str, str, str, str, tuple[GoldenMeasurement, ...]]:
    """tag id, product, version, manufacturer id and measurements: the fields a :class:`Rim` takes first."""
    metas, payloads = root.findall(SWID + "Meta"), root.findall(SWID + "Payload")
    if len(metas) != 1 or len(payloads) != 1:
        raise _malformed("a RIM has exactly one Meta and one Payload element")
    measurements = tuple(
        _golden(resource)
        for resource in payloads[0].findall(SWID + "Resource")
        if resource.get("type") == "Measurement"
    )
    if len({golden.index for golden in measurements}) != len(measurements):
        raise _malformed("a measurement index appears twice")
    meta = metas[0]
    return (
        _attribute(root, "tagId"),
        _attribute(meta, "product"),
        _attribute(meta, "colloquialVersion"),
        _attribute(meta, TCG_RIM + "FirmwareManufacturerId"),
        measurements,
    )


def parse_rim(xml: bytes) -> Rim:
    """Parse a RIM and its signing chain; nothing is trusted until :func:`verify_rim`."""
    root = _parse_xml(bytes(xml))
    certificates = []
    for element in root.findall(f"{DSIG}Signature/{DSIG}KeyInfo/{DSIG}X509Data/{DSIG}X509Certificate"):
        try:
            der = base64.b64decode("".join((element.text or "").split()), validate=True)
        except binascii.Error:
            raise _malformed("an X509Certificate is not base64") from None
        certificates.append(parse_certificate(der))
    if not certificates:
        raise _malformed("no signing certificate in the signature's KeyInfo: the RIM is not signed")
    return Rim(*_content(root), certificates=tuple(certificates), xml=bytes(xml))


def read_rim(xml: bytes, cache: ChainCache | None) -> Rim:
    """:func:`parse_rim`, remembered in ``cache``: choosing RIMs parses every one given, on every verification."""
    key = ("rim-parse", xml)
    if cache is not None and isinstance(hit := cache.get(key, ALWAYS[0]), Rim):
        return hit
    parsed = parse_rim(xml)
    if cache is not None:
        cache.put(key, parsed, *ALWAYS)
    return parsed


def _pem(cert: Certificate) -> str:
    return "-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(cert.der).decode() + "-----END CERTIFICATE-----\n"


def verify_rim(
    rim: Rim, *, roots: Sequence[Certificate] | None = None, now: datetime, cache: ChainCache | None = None
) -> Rim:
    """Check the signing chain at ``now`` and the XML signature; return the RIM as read from the signed bytes."""
    key = ("rim", rim.xml, tuple(root.der for root in roots) if roots is not None else None)
    if cache is not None and isinstance(hit := cache.get(key, now), Rim):
        return hit
    leaf = rim.certificates[0]
    anchor = anchored(
        rim.certificates,
        roots,
        NVIDIA_CORIM_SIGNING_ROOT_CA,
        now=now,
        cache=cache,
        what=f"the signing chain of RIM {rim.version}",
        root_name="the NVIDIA CoRIM signing root CA",
        check="rim_chain",
    )
    config = SignatureConfiguration(
        location="./",
        signature_methods=frozenset({SignatureMethod.ECDSA_SHA384}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA384}),
        verification_time=now,
    )
    try:
        result = XMLVerifier().verify(rim.xml, x509_cert=_pem(leaf), expect_config=config)
    except (SignXMLException, ValueError, SyntaxError) as exc:
        raise CollateralInvalid(
            f"RIM {rim.version} ({rim.product}): the XML signature by {leaf} does not verify ({exc}); "
            "the file was altered: fetch it again from NVIDIA's RIM service",
            check="rim_signature",
        ) from None
    if isinstance(result, list):
        raise CollateralInvalid(f"RIM {rim.version}: expected one signed reference", check="rim_signature")
    verified = Rim(*_content(_parse_xml(result.signed_data)), certificates=rim.certificates, xml=rim.xml)
    if cache is not None:
        cache.put(key, verified, *window([*rim.certificates, anchor]))
    return verified


def _text(opaque: OpaqueData, type_id: int) -> str:
    return (opaque.get(type_id) or b"").split(b"\x00", 1)[0].decode("ascii", errors="replace")


def select(rims: Sequence[Rim], chip: str, opaque: OpaqueData) -> tuple[Rim, Rim]:
    """The driver RIM and the VBIOS RIM for this GPU, chosen by chip and by the versions the report states."""
    vbios_id = "_".join([_text(opaque, 17), _text(opaque, 18), _text(opaque, 15), opaque.vbios_version])
    wanted = (
        ("driver", opaque.driver_version, f"NV_GPU_DRIVER_{chip}_{opaque.driver_version}"),
        ("VBIOS", opaque.vbios_version, f"NV_GPU_VBIOS_{vbios_id.replace('.', '')}"),
    )
    chosen = []
    for kind, version, rim_id in wanted:
        found = list(
            dict.fromkeys(rim for rim in rims if rim.product == chip and rim.version.upper() == version.upper())
        )
        if len(found) != 1:
            problem = "none" if not found else f"{len(found)} different ones"
            raise CollateralInvalid(
                f"{kind} RIM for {chip} version {version}: {problem} among the {len(rims)} RIMs given; put exactly "
                f"{rim_id} from NVIDIA's RIM service in the RIM folder",
                check="rim_select",
            )
        chosen.append(found[0])
    return chosen[0], chosen[1]


@dataclass(frozen=True)
class Mismatch:
    index: int
    """The RIM index (the SPDM block is ``index + 1``)."""
    source: str
    expected: tuple[bytes, ...]
    actual: bytes | None
    """None when the report has no such block."""

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "source": self.source,
            "expected": [value.hex() for value in self.expected],
            "actual": self.actual.hex() if self.actual is not None else None,
        }


@dataclass(frozen=True)
class Comparison:
    """Every active golden measurement of both RIMs against the report."""

    compared: tuple[int, ...]
    skipped: tuple[int, ...]
    mismatches: tuple[Mismatch, ...]

    @property
    def matched(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, object]:
        return {
            "matched": self.matched,
            "compared": list(self.compared),
            "skipped": list(self.skipped),
            "mismatches": [mismatch.to_json() for mismatch in self.mismatches],
        }


def compare(report: Report, opaque: OpaqueData, driver: Rim, vbios: Rim) -> Comparison:
    """Compare like NVIDIA's verifier: each active index against its alternatives; NVDEC0's only when enabled."""
    conflict = sorted({g.index for g in driver.active} & {g.index for g in vbios.active})
    if conflict:
        raise CollateralInvalid(
            f"the driver RIM {driver.version} and the VBIOS RIM {vbios.version} both claim indices {conflict}; "
            "they do not belong together",
            check="rim_conflict",
        )
    if opaque.nvdec0_status not in (None, NVDEC0_ENABLED, NVDEC0_DISABLED):
        raise EvidenceMalformed(f"unknown NVDEC0 status 0x{opaque.nvdec0_status:02x}", check="opaque_data")
    compared, skipped, mismatches = [], [], []
    for source, rim in (("driver", driver), ("vbios", vbios)):
        for golden in rim.active:
            if golden.index == NVDEC0_INDEX and opaque.nvdec0_status == NVDEC0_DISABLED:
                skipped.append(golden.index)
                continue
            block = report.response.block(golden.index + 1)
            actual = block.value if block is not None else None
            compared.append(golden.index)
            if actual not in golden.alternatives:
                mismatches.append(Mismatch(golden.index, source, golden.alternatives, actual))
    return Comparison(tuple(sorted(compared)), tuple(skipped), tuple(mismatches))

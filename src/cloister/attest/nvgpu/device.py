"""What the GPU's certificate chain says about the device: its model, its unique id and its firmware id (FWID).

The leaf ("GH100 A01 GSP FMC LF") is issued at boot by the device key ("… GSP BROM") for the firmware that is
running; its TCG DICE TcbInfo extension carries that firmware's FWID, which the report must repeat, so a report
signed by a leaf issued for other firmware is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloister.attest.der import OCTET_STRING, OID, SEQUENCE, Certificate, children, decode_oid, expect, read_tlv
from cloister.errors import CertificateInvalid, EvidenceMalformed, VerificationFailed

OID_DICE_TCB_INFO = "2.23.133.5.4.1"
"""Hopper: SEQUENCE { INTEGER, SubjectPublicKeyInfo, FWID }."""
OID_DICE_TCB_INFO_BLACKWELL = "2.23.133.5.4.1.1"
"""Blackwell: a DiceTcbInfo whose ``fwids [6]`` lists the FWIDs, the first being the firmware's."""
OID_SHA384 = "2.16.840.1.101.3.4.2.2"
NVIDIA_IANA_ENTERPRISE = "5703"
"""NVIDIA's IANA private enterprise number: the ``oem_id`` of a device whose chain ends at NVIDIA's root."""
ARCHITECTURES = {"GH": "HOPPER", "GB": "BLACKWELL"}


def _malformed(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"TcbInfo extension: {message}", check="fwid")


def parse_fwid(extension: bytes) -> bytes:
    """The SHA-384 FWID inside either NVIDIA TcbInfo layout."""
    top, end = read_tlv(extension, what="TcbInfo")
    if end != len(extension):
        raise _malformed("trailing bytes")
    items = children(expect(top, SEQUENCE, "TcbInfo").value, what="TcbInfo")
    fwids = next((item for item in items if item.tag == 0xA6), None)
    entries = children(fwids.value, what="TcbInfo fwids") if fwids is not None else items[-1:]
    if not entries:
        raise _malformed("no FWID")
    parts = children(expect(entries[0], SEQUENCE, "FWID").value, what="FWID")
    if len(parts) != 2:
        raise _malformed("an FWID is a hash algorithm and a digest")
    algorithm = decode_oid(expect(parts[0], OID, "FWID hash algorithm").value)
    digest = expect(parts[1], OCTET_STRING, "FWID digest").value
    if algorithm != OID_SHA384 or len(digest) != 48:
        raise _malformed(f"the FWID is not a SHA-384 digest (algorithm {algorithm}, {len(digest)} bytes)")
    return digest


@dataclass(frozen=True)
class Device:
    """The identity claims of one GPU, read from its (already verified) chain."""

    leaf: Certificate
    hwmodel: str
    """Common name of the device certificate, e.g. ``GH100 A01 GSP BROM`` (NVIDIA's ``hwmodel`` claim)."""
    chip: str
    """The chip alone, e.g. ``GH100``: what RIMs name as their product."""
    arch: str
    """``HOPPER`` or ``BLACKWELL``."""
    ueid: str
    """The leaf's serial number in decimal (NVIDIA's ``ueid`` claim): unique per device and firmware."""
    fwid: bytes


def identify(chain: Sequence[Certificate]) -> Device:
    """Read the device claims from a chain of at least leaf and device certificate."""
    leaf, device = chain[0], chain[1]
    extension = leaf.extension(OID_DICE_TCB_INFO_BLACKWELL) or leaf.extension(OID_DICE_TCB_INFO)
    if extension is None:
        raise CertificateInvalid(
            f"{leaf} has no TCG DICE TcbInfo (FWID) extension, so it is not a GPU attestation leaf; "
            "pass the whole chain the GPU returned, leaf first",
            check="fwid",
        )
    hwmodel = device.subject.common_name
    chip = hwmodel.split(" ", 1)[0]
    arch = ARCHITECTURES.get(chip[:2])
    if arch is None or not chip[2:].isalnum():
        raise VerificationFailed(
            f"unsupported GPU model {hwmodel!r}: Cloister verifies Hopper (GH1xx) and Blackwell (GB1xx) GPUs",
            check="arch",
        )
    return Device(leaf, hwmodel, chip, arch, str(leaf.serial), parse_fwid(extension.value))

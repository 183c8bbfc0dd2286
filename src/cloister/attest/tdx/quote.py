"""Intel TDX quote v4 / v5 parsing: bytes → frozen dataclasses, once, at the edge.

Layout (Intel TDX DCAP Quoting Library API, appendix A): a 48-byte header; v5 then has a 6-byte body descriptor
(type 2 = TDX 1.0, 3 = TDX 1.5, and the body size); the TD report body (584 bytes for TDX 1.0, 648 for 1.5); a u32
length; then the signature data: ECDSA P-256 signature (raw r‖s) over everything before the length, the attestation
key (raw x‖y) and certification data type 6 (QE report, its PCK signature, QE auth data, and certification data
type 5: the PEM PCK chain). Bytes after the structure (zero padding, test text) are not part of the quote.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cloister.errors import EvidenceMalformed

HEADER_SIZE = 48
DESCRIPTOR_SIZE = 6
TDX10_BODY_SIZE = 584
TDX15_BODY_SIZE = 648
ENCLAVE_REPORT_SIZE = 384
SIGNATURE_SIZE = 64
KEY_SIZE = 64
MR_SIZE = 48

TEE_TYPE_TDX = 0x81
ATTESTATION_KEY_ECDSA_P256 = 2
BODY_TDX10 = 2
BODY_TDX15 = 3
CERT_QE_REPORT = 6
CERT_PCK_CHAIN = 5

_BODY_SIZES = {BODY_TDX10: TDX10_BODY_SIZE, BODY_TDX15: TDX15_BODY_SIZE}


def _malformed(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"TDX quote: {message}", check="quote_format")


@dataclass(frozen=True)
class Header:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    """Reserved in TDX quotes (Intel fills it only for SGX); kept because it is signed."""
    pce_svn: int
    """Reserved in TDX quotes, like :attr:`qe_svn`."""
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class TdReport:
    """The TD quote body: what the TDX module measured about the TD (TDX 1.5 adds the last two fields)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None


@dataclass(frozen=True)
class EnclaveReport:
    """An SGX report body: here, the Quoting Enclave's report, signed by the PCK key."""

    raw: bytes
    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes


@dataclass(frozen=True)
class Quote:
    header: Header
    body_type: int
    """2 = TDX 1.0 body, 3 = TDX 1.5 body (v4 quotes always carry a TDX 1.0 body)."""
    body: TdReport
    signed: bytes
    """Header (‖ v5 body descriptor) ‖ body: the bytes the attestation key signs."""
    signature: bytes
    attestation_key: bytes
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain: bytes
    """The PEM text of certification data type 5 (PCK leaf, PCK CA, root), as carried."""
    size: int
    """Length of the quote structure; any bytes after it were ignored."""


class _Reader:
    """Reads fields front to back and refuses to run past ``end``."""

    def __init__(self, data: bytes, offset: int = 0, end: int | None = None) -> None:
        self.data, self.offset = data, offset
        self.end = len(data) if end is None else end

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.offset + size > self.end:
            raise _malformed(f"truncated at {what} (needs {size} bytes at offset {self.offset}, has {self.left})")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    @property
    def left(self) -> int:
        return self.end - self.offset


def parse_header(data: bytes) -> Header:
    reader = _Reader(data)
    header = Header(
        version=reader.u16("version"),
        attestation_key_type=reader.u16("attestation key type"),
        tee_type=reader.u32("TEE type"),
        qe_svn=reader.u16("QE SVN"),
        pce_svn=reader.u16("PCE SVN"),
        qe_vendor_id=reader.take(16, "QE vendor id"),
        user_data=reader.take(20, "user data"),
    )
    if header.version not in (4, 5):
        raise _malformed(f"quote format not supported: version {header.version} (this verifier reads v4 and v5)")
    if header.tee_type != TEE_TYPE_TDX:
        raise _malformed(f"TEE type 0x{header.tee_type:x} is not TDX (0x81): this is not a TD quote")
    if header.attestation_key_type != ATTESTATION_KEY_ECDSA_P256:
        raise _malformed(f"attestation key type {header.attestation_key_type} is not ECDSA P-256 (2)")
    return header


def parse_td_report(data: bytes, body_type: int) -> TdReport:
    """Parse a TD quote body of the size ``body_type`` implies (keyword arguments evaluate in field order)."""
    reader = _Reader(data)
    tdx15 = body_type == BODY_TDX15
    report = TdReport(
        tee_tcb_svn=reader.take(16, "TEE_TCB_SVN"),
        mr_seam=reader.take(MR_SIZE, "MRSEAM"),
        mr_signer_seam=reader.take(MR_SIZE, "MRSIGNERSEAM"),
        seam_attributes=reader.take(8, "SEAMATTRIBUTES"),
        td_attributes=reader.take(8, "TDATTRIBUTES"),
        xfam=reader.take(8, "XFAM"),
        mr_td=reader.take(MR_SIZE, "MRTD"),
        mr_config_id=reader.take(MR_SIZE, "MRCONFIGID"),
        mr_owner=reader.take(MR_SIZE, "MROWNER"),
        mr_owner_config=reader.take(MR_SIZE, "MROWNERCONFIG"),
        rtmrs=(
            reader.take(MR_SIZE, "RTMR0"),
            reader.take(MR_SIZE, "RTMR1"),
            reader.take(MR_SIZE, "RTMR2"),
            reader.take(MR_SIZE, "RTMR3"),
        ),
        report_data=reader.take(64, "REPORTDATA"),
        tee_tcb_svn2=reader.take(16, "TEE_TCB_SVN2") if tdx15 else None,
        mr_service_td=reader.take(MR_SIZE, "MRSERVICETD") if tdx15 else None,
    )
    if reader.left:
        raise _malformed(f"{reader.left} unexpected bytes after the TD report body")
    return report


def parse_enclave_report(data: bytes) -> EnclaveReport:
    if len(data) != ENCLAVE_REPORT_SIZE:
        raise _malformed(f"QE report is {len(data)} bytes, expected {ENCLAVE_REPORT_SIZE}")
    return EnclaveReport(
        raw=data,
        cpu_svn=data[0:16],
        misc_select=int.from_bytes(data[16:20], "little"),
        attributes=data[48:64],
        mr_enclave=data[64:96],
        mr_signer=data[128:160],
        isv_prod_id=int.from_bytes(data[256:258], "little"),
        isv_svn=int.from_bytes(data[258:260], "little"),
        report_data=data[320:384],
    )


def parse_quote(data: bytes) -> Quote:
    """Parse a TDX quote v4 or v5; every length must agree with the structure, trailing bytes are ignored."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _malformed("expected bytes")
    data = bytes(data)
    header = parse_header(_Reader(data).take(HEADER_SIZE, "header"))
    reader = _Reader(data, HEADER_SIZE)
    body_type = BODY_TDX10
    if header.version == 5:
        body_type = reader.u16("body type")
        body_size = reader.u32("body size")
        if body_type not in _BODY_SIZES:
            raise _malformed(f"body type {body_type} is not a TD report (2 = TDX 1.0, 3 = TDX 1.5)")
        if body_size != _BODY_SIZES[body_type]:
            raise _malformed(f"body size {body_size} does not match body type {body_type}")
    body = parse_td_report(reader.take(_BODY_SIZES[body_type], "TD report body"), body_type)
    signed = data[: reader.offset]
    signature_data_size = reader.u32("signature data size")
    end = reader.offset + signature_data_size
    if end > len(data):
        raise _malformed(f"signature data size 0x{signature_data_size:x} runs past the end ({len(data)} bytes)")
    sig = _Reader(data, reader.offset, end)
    signature = sig.take(SIGNATURE_SIZE, "quote signature")
    attestation_key = sig.take(KEY_SIZE, "attestation key")
    cert_type = sig.u16("certification data type")
    cert_size = sig.u32("certification data size")
    if cert_type != CERT_QE_REPORT:
        raise _malformed(f"certification data type {cert_type} is not a QE report (6)")
    if cert_size != sig.left:
        raise _malformed(
            f"certification data declares 0x{cert_size:x} bytes but the signature data leaves 0x{sig.left:x}"
        )
    qe_report = parse_enclave_report(sig.take(ENCLAVE_REPORT_SIZE, "QE report"))
    qe_report_signature = sig.take(SIGNATURE_SIZE, "QE report signature")
    qe_auth_data = sig.take(sig.u16("QE auth data size"), "QE auth data")
    inner_type = sig.u16("PCK certification data type")
    inner_size = sig.u32("PCK certification data size")
    if inner_type != CERT_PCK_CHAIN:
        raise _malformed(
            f"certification data type {inner_type} is not a PCK certificate chain (5); fetch the PCK certificate "
            "from Intel PCS and use a quote generated with the chain embedded"
        )
    if inner_size != sig.left:
        raise _malformed(f"PCK chain size 0x{inner_size:x} does not fill the certification data (0x{sig.left:x})")
    pck_chain = sig.take(inner_size, "PCK certificate chain")
    return Quote(
        header=header,
        body_type=body_type,
        body=body,
        signed=signed,
        signature=signature,
        attestation_key=attestation_key,
        qe_report=qe_report,
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        pck_chain=pck_chain,
        size=end,
    )

"""SPDM 1.1 GET_MEASUREMENTS request and MEASUREMENTS response, parsed by structure.

An NVIDIA GPU attestation report is the signed request followed by the response. Every length is read from the
bytes themselves (block count, record length, opaque length) so nothing depends on where the report ends: real H100
reports arrive with zero padding after the signature, which a "last 96 bytes" parser mistakes for the signature.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloister.errors import EvidenceMalformed

SPDM_VERSION = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
SIGNATURE_REQUESTED = 0x01
ALL_MEASUREMENTS = 0xFF
DMTF_SPECIFICATION = 0x01
NONCE_SIZE = 32
SIGNATURE_SIZE = 96
"""ECDSA P-384 r‖s, big-endian: the one report signature Hopper and Blackwell GPUs produce."""


class _Reader:
    """A cursor over bytes whose every read names the field, so a truncation says what was cut off."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.what, self.offset = data, what, 0

    def take(self, size: int, field: str) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise EvidenceMalformed(
                f"{self.what}: truncated at {field} (needs {size} bytes at offset {self.offset}, "
                f"{len(self.data) - self.offset} left); collect the report again, whole",
                check="spdm",
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "little")

    @property
    def rest(self) -> bytes:
        return self.data[self.offset :]


def _malformed(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"SPDM report: {message}", check="spdm")


@dataclass(frozen=True)
class MeasurementRequest:
    """GET_MEASUREMENTS as the verifier (or the driver on its behalf) sent it: the nonce lives here."""

    version: int
    param1: int
    param2: int
    nonce: bytes
    slot_id: int


@dataclass(frozen=True)
class MeasurementBlock:
    """One DMTF measurement block: ``index`` counts from 1 (RIM index ``i`` is block ``i + 1``)."""

    index: int
    specification: int
    value_type: int
    value: bytes


@dataclass(frozen=True)
class MeasurementResponse:
    version: int
    param1: int
    param2: int
    blocks: tuple[MeasurementBlock, ...]
    record: bytes
    """The measurement record exactly as signed (all blocks with their headers)."""
    nonce: bytes
    """The responder's own nonce."""
    opaque: bytes
    signature: bytes

    def block(self, index: int) -> MeasurementBlock | None:
        return next((block for block in self.blocks if block.index == index), None)


@dataclass(frozen=True)
class Report:
    """A parsed attestation report. Nothing here is trusted until the leaf's signature over ``signed`` verifies."""

    request: MeasurementRequest
    response: MeasurementResponse
    signed: bytes
    """request ‖ response up to the end of the opaque data: what the GPU signed."""
    padding: int
    """Zero bytes after the signature (the driver's fixed-size buffer)."""


def _request(reader: _Reader) -> MeasurementRequest:
    version = reader.uint(1, "request SPDMVersion")
    if version != SPDM_VERSION:
        raise _malformed(f"request SPDM version 0x{version:02x} is not supported (NVIDIA GPUs use 1.1, 0x11)")
    code = reader.uint(1, "request code")
    if code != GET_MEASUREMENTS:
        raise _malformed(f"the report does not start with GET_MEASUREMENTS (0xe0) but 0x{code:02x}")
    param1, param2 = reader.uint(1, "request Param1"), reader.uint(1, "request Param2")
    if not param1 & SIGNATURE_REQUESTED:
        raise _malformed("the request did not ask for a signature, so the response proves nothing")
    if param2 != ALL_MEASUREMENTS:
        raise _malformed(f"the request asked for measurement 0x{param2:02x}, not all of them (0xff)")
    nonce = reader.take(NONCE_SIZE, "request nonce")
    return MeasurementRequest(version, param1, param2, nonce, reader.uint(1, "request SlotIDParam"))


def _blocks(record: bytes, count: int) -> tuple[MeasurementBlock, ...]:
    reader = _Reader(record, "SPDM measurement record")
    blocks: list[MeasurementBlock] = []
    seen: set[int] = set()
    while reader.rest:
        index = reader.uint(1, "block index")
        specification = reader.uint(1, f"block {index} specification")
        measurement = reader.take(reader.uint(2, f"block {index} size"), f"block {index} measurement")
        if specification != DMTF_SPECIFICATION:
            raise _malformed(f"block {index} uses measurement specification 0x{specification:02x}, not DMTF (0x01)")
        inner = _Reader(measurement, f"SPDM block {index}")
        value_type = inner.uint(1, "DMTF value type")
        value = inner.take(inner.uint(2, "DMTF value size"), "DMTF value")
        if inner.rest:
            raise _malformed(f"block {index}: the DMTF value size disagrees with the block size")
        if index in seen:
            raise _malformed(f"measurement block {index} appears twice")
        seen.add(index)
        blocks.append(MeasurementBlock(index, specification, value_type, value))
    if len(blocks) != count:
        raise _malformed(f"the response announces {count} measurement blocks but its record holds {len(blocks)}")
    return tuple(blocks)


def _response(reader: _Reader, request: MeasurementRequest) -> MeasurementResponse:
    version = reader.uint(1, "response SPDMVersion")
    if version != request.version:
        raise _malformed(f"response version 0x{version:02x} differs from the request's 0x{request.version:02x}")
    code = reader.uint(1, "response code")
    if code != MEASUREMENTS:
        raise _malformed(f"the response is not MEASUREMENTS (0x60) but 0x{code:02x}")
    param1, param2 = reader.uint(1, "response Param1"), reader.uint(1, "response Param2")
    if param2 & 0x0F != request.slot_id & 0x0F:
        raise _malformed(f"the response names slot {param2 & 0x0F}, the request slot {request.slot_id & 0x0F}")
    count = reader.uint(1, "NumberOfBlocks")
    record = reader.take(reader.uint(3, "MeasurementRecordLength"), "measurement record")
    blocks = _blocks(record, count)
    nonce = reader.take(NONCE_SIZE, "response nonce")
    opaque = reader.take(reader.uint(2, "OpaqueLength"), "opaque data")
    signature = reader.take(SIGNATURE_SIZE, "signature")
    return MeasurementResponse(version, param1, param2, blocks, record, nonce, opaque, signature)


def parse_report(data: bytes) -> Report:
    """Parse request ‖ response; only zero padding may follow the signature."""
    reader = _Reader(bytes(data), "SPDM report")
    request = _request(reader)
    response = _response(reader, request)
    padding = reader.rest
    if padding.strip(b"\x00"):
        raise _malformed(f"{len(padding)} bytes after the signature are not zero padding")
    signed = reader.data[: reader.offset - SIGNATURE_SIZE]
    return Report(request, response, signed, len(padding))


def parse_hex_report(text: bytes | str) -> bytes:
    """The report bytes from the hex text NVIDIA's tools write (whitespace ignored)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    try:
        return bytes.fromhex("".join(text.split()))
    except ValueError:
        raise EvidenceMalformed(
            "the GPU report is neither raw SPDM bytes nor hex text; pass the file NVIDIA's tools wrote", check="spdm"
        ) from None

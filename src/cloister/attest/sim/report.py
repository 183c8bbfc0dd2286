"""The simulator's two binary report formats, parsed strictly and built from the same field checks.

CPU report, version 1 — 272 bytes, integers big-endian::

    0x00   8  magic "CLSIMCPU"
    0x08   2  version = 1
    0x0A   2  platform info: bit 0 = SMT enabled; every other bit must be 0
    0x0C   4  TCB version (the chip firmware's security version number)
    0x10   1  debug: 0 or 1
    0x11  15  reserved, zero
    0x20  32  chip id: ASCII, NUL-padded
    0x40  48  measurement of the launched image
    0x70  64  report data chosen by the guest
    0xB0  96  signature: ECDSA P-384 over SHA-384 of bytes 0x00-0xAF, r then s, 48 bytes each

GPU report, version 1 — modelled on an SPDM GET_MEASUREMENTS response::

    0x00   8  magic "CLSIMGPU"
    0x08   2  version = 1
    0x0A   1  debug: 0 or 1
    0x0B   1  number of measurement blocks, 1 to 32
    0x0C   4  TCB version
    0x10  32  nonce chosen by the verifier
    0x30  32  chip id, ASCII, NUL-padded
    0x50  32  driver version, ASCII, NUL-padded
    0x70  32  VBIOS version, ASCII, NUL-padded
    0x90   …  blocks, each: index (1 byte, strictly increasing from 1 up), size (2 bytes, 1-64), value
    end-96 96  signature over everything before it, as in the CPU report

Text fields are 1-32 characters of ``A-Z a-z 0-9 . _ + -`` starting with a letter or digit, padded with NUL bytes,
so each value has exactly one encoding. Anything else is :class:`~cloister.errors.EvidenceMalformed`.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from typing import ClassVar, Final

from cloister.errors import EvidenceMalformed

VERSION: Final = 1
SIGNATURE_SIZE: Final = 96
MEASUREMENT_SIZE: Final = 48
REPORT_DATA_SIZE: Final = 64
NONCE_SIZE: Final = 32
TEXT_SIZE: Final = 32
MAX_BLOCKS: Final = 32
MAX_BLOCK_VALUE: Final = 64
MAX_TCB: Final = 0xFFFF_FFFF

_CPU_HEADER = struct.Struct(">8sHHIB15s32s48s64s")
_GPU_HEADER = struct.Struct(">8sHBBI32s32s32s32s")
_BLOCK_HEADER = struct.Struct(">BH")
_SMT_BIT = 0x1
_TEXT_RE = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$")


def _bad(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"sim report: {message}", check="report")


def _check_text(name: str, value: str) -> None:
    if not isinstance(value, str) or not _TEXT_RE.match(value.encode("ascii", errors="replace")):
        raise _bad(f"{name} {value!r} must be 1-32 characters of A-Z a-z 0-9 . _ + - (starting alphanumeric)")


def _check_size(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise _bad(f"{name} must be {size} bytes")


def check_chip(chip_id: str, tcb_version: int) -> None:
    """The fields every report shares with the chip that signs it."""
    _check_text("chip id", chip_id)
    if not isinstance(tcb_version, int) or not 0 <= tcb_version <= MAX_TCB:
        raise _bad(f"TCB version must be an integer from 0 to {MAX_TCB}")


def _check_common(tcb_version: int, debug: bool, chip_id: str) -> None:
    check_chip(chip_id, tcb_version)
    if not isinstance(debug, bool):
        raise _bad("debug must be true or false")


def _text(name: str, raw: bytes) -> str:
    value = raw.rstrip(b"\0")
    if not _TEXT_RE.match(value):
        raise _bad(f"{name} is not 1-32 allowed characters padded with NUL bytes")
    return value.decode("ascii")


def _flag(name: str, raw: int) -> bool:
    if raw not in (0, 1):
        raise _bad(f"{name} byte must be 0 or 1, got {raw}")
    return raw == 1


@dataclass(frozen=True)
class CpuReport:
    """The signed fields of a sim CPU report; construction checks them, whether parsed or about to be signed."""

    KIND: ClassVar[str] = "cpu"
    MAGIC: ClassVar[bytes] = b"CLSIMCPU"

    tcb_version: int
    debug: bool
    smt: bool
    chip_id: str
    measurement: bytes
    report_data: bytes

    def __post_init__(self) -> None:
        _check_common(self.tcb_version, self.debug, self.chip_id)
        if not isinstance(self.smt, bool):
            raise _bad("smt must be true or false")
        _check_size("measurement", self.measurement, MEASUREMENT_SIZE)
        _check_size("report data", self.report_data, REPORT_DATA_SIZE)

    def body(self) -> bytes:
        """The signed region."""
        return _CPU_HEADER.pack(
            self.MAGIC,
            VERSION,
            _SMT_BIT if self.smt else 0,
            self.tcb_version,
            int(self.debug),
            bytes(15),
            self.chip_id.encode("ascii"),
            self.measurement,
            self.report_data,
        )

    @classmethod
    def parse_body(cls, body: bytes) -> CpuReport:
        if len(body) != _CPU_HEADER.size:
            raise _bad(f"a CPU report is {_CPU_HEADER.size + SIGNATURE_SIZE} bytes, got {len(body) + SIGNATURE_SIZE}")
        _, _, info, tcb, debug, reserved, chip_id, measurement, report_data = _CPU_HEADER.unpack(body)
        if info & ~_SMT_BIT:
            raise _bad(f"platform info 0x{info:04x} has undefined bits set")
        if any(reserved):
            raise _bad("reserved bytes 0x11-0x1F must be zero")
        return cls(
            tcb, _flag("debug", debug), bool(info & _SMT_BIT), _text("chip id", chip_id), measurement, report_data
        )


@dataclass(frozen=True)
class MeasurementBlock:
    index: int
    value: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or not 1 <= self.index <= 255:
            raise _bad("a measurement block index is 1 to 255")
        if not isinstance(self.value, bytes) or not 1 <= len(self.value) <= MAX_BLOCK_VALUE:
            raise _bad(f"a measurement block value is 1 to {MAX_BLOCK_VALUE} bytes")

    def encode(self) -> bytes:
        return _BLOCK_HEADER.pack(self.index, len(self.value)) + self.value


@dataclass(frozen=True)
class GpuReport:
    """The signed fields of a sim GPU report: the nonce and SPDM-like measurement blocks."""

    KIND: ClassVar[str] = "gpu"
    MAGIC: ClassVar[bytes] = b"CLSIMGPU"

    tcb_version: int
    debug: bool
    chip_id: str
    nonce: bytes
    driver_version: str
    vbios_version: str
    blocks: tuple[MeasurementBlock, ...]

    def __post_init__(self) -> None:
        _check_common(self.tcb_version, self.debug, self.chip_id)
        _check_size("nonce", self.nonce, NONCE_SIZE)
        _check_text("driver version", self.driver_version)
        _check_text("VBIOS version", self.vbios_version)
        if not 1 <= len(self.blocks) <= MAX_BLOCKS:
            raise _bad(f"a GPU report has 1 to {MAX_BLOCKS} measurement blocks")
        indexes = [block.index for block in self.blocks]
        if indexes != sorted(set(indexes)):
            raise _bad("measurement block indexes must be strictly increasing")

    @property
    def report_data(self) -> bytes:
        """What a GPU report binds: the verifier's nonce."""
        return self.nonce

    @property
    def measurement(self) -> bytes:
        """SHA-384 over the encoded measurement blocks: one value that changes if any block does."""
        return hashlib.sha384(b"".join(block.encode() for block in self.blocks)).digest()

    def body(self) -> bytes:
        header = _GPU_HEADER.pack(
            self.MAGIC,
            VERSION,
            int(self.debug),
            len(self.blocks),
            self.tcb_version,
            self.nonce,
            self.chip_id.encode("ascii"),
            self.driver_version.encode("ascii"),
            self.vbios_version.encode("ascii"),
        )
        return header + b"".join(block.encode() for block in self.blocks)

    @classmethod
    def parse_body(cls, body: bytes) -> GpuReport:
        if len(body) < _GPU_HEADER.size:
            raise _bad(f"a GPU report is at least {_GPU_HEADER.size + SIGNATURE_SIZE} bytes")
        _, _, debug, count, tcb, nonce, chip_id, driver, vbios = _GPU_HEADER.unpack_from(body)
        blocks: list[MeasurementBlock] = []
        offset = _GPU_HEADER.size
        for _ in range(count):
            if offset + _BLOCK_HEADER.size > len(body):
                raise _bad(f"measurement block {len(blocks) + 1} of {count} is truncated")
            index, size = _BLOCK_HEADER.unpack_from(body, offset)
            offset += _BLOCK_HEADER.size
            if offset + size > len(body):
                raise _bad(f"measurement block {index} runs past the signature")
            blocks.append(MeasurementBlock(index, body[offset : offset + size]))
            offset += size
        if offset != len(body):
            raise _bad(f"{len(body) - offset} unexpected bytes between the measurement blocks and the signature")
        return cls(
            tcb,
            _flag("debug", debug),
            _text("chip id", chip_id),
            nonce,
            _text("driver version", driver),
            _text("VBIOS version", vbios),
            tuple(blocks),
        )


Report = CpuReport | GpuReport


@dataclass(frozen=True)
class SignedReport:
    """A parsed report: its fields, the exact bytes the signature covers, and the raw r‖s signature."""

    report: Report
    signed: bytes
    signature: bytes


def parse_report(data: bytes) -> SignedReport:
    """Parse a CPU or GPU report by its magic; nothing here is trusted until the signature is checked."""
    if not isinstance(data, bytes) or len(data) < 10 + SIGNATURE_SIZE:
        raise _bad("too short to be a sim report")
    magic, version = data[:8], int.from_bytes(data[8:10], "big")
    kinds: dict[bytes, type[CpuReport] | type[GpuReport]] = {CpuReport.MAGIC: CpuReport, GpuReport.MAGIC: GpuReport}
    kind = kinds.get(magic)
    if kind is None:
        raise _bad(f"unknown magic {magic!r}; expected {CpuReport.MAGIC!r} or {GpuReport.MAGIC!r}")
    if version != VERSION:
        raise _bad(f"version {version} is not supported (this verifier reads version {VERSION})")
    signed, signature = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
    return SignedReport(kind.parse_body(signed), signed, signature)

"""The sim report formats: documented layout, strict parsing, and fuzzing that only ever meets EvidenceMalformed."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import struct
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.sim.fixtures import CPU_CHIP, GPU_BLOCKS, MEASUREMENT, cpu_report, gpu_report

from cloister.attest.der import Certificate, Extension, parse_certificate
from cloister.attest.sim import ChipIdentity, Evidence
from cloister.attest.sim.identity import CHIP_IDENTITY_OID
from cloister.attest.sim.report import CpuReport, GpuReport, MeasurementBlock, parse_report
from cloister.errors import EvidenceMalformed

FUZZ = settings(max_examples=200, deadline=None)


def test_cpu_report_layout_is_the_documented_one() -> None:
    data = cpu_report(debug=True, smt=False)
    assert len(data) == 272
    assert data[:8] == b"CLSIMCPU" and data[8:10] == b"\x00\x01"
    assert struct.unpack(">HI", data[10:16]) == (0, 3)
    assert data[0x10] == 1 and data[0x11:0x20] == bytes(15)
    assert data[0x20:0x40] == b"node-1".ljust(32, b"\0")
    assert data[0x40:0x70] == MEASUREMENT and data[0x70:0xB0] == bytes(range(64))
    parsed = parse_report(data)
    assert parsed.signed == data[:0xB0] and parsed.signature == data[0xB0:]
    assert parsed.report == CpuReport(3, True, False, "node-1", MEASUREMENT, bytes(range(64)))


def test_gpu_report_layout_is_the_documented_one() -> None:
    data = gpu_report()
    assert data[:8] == b"CLSIMGPU" and data[8:10] == b"\x00\x01"
    assert (data[0x0A], data[0x0B], struct.unpack(">I", data[0x0C:0x10])[0]) == (0, 3, 2)
    assert data[0x10:0x30] == bytes(range(32))
    assert data[0x30:0x50] == b"gpu-1".ljust(32, b"\0") and data[0x50:0x70] == b"sim-1.0".ljust(32, b"\0")
    blocks = data[0x90:-96]
    assert blocks[:3] == b"\x01\x00\x30" and blocks[3:51] == GPU_BLOCKS[0]
    assert blocks[51:56] == b"\x02\x00\x02\x01\x02"
    report = parse_report(data).report
    assert isinstance(report, GpuReport)
    assert report.blocks == tuple(MeasurementBlock(i + 1, v) for i, v in enumerate(GPU_BLOCKS))
    assert report.measurement == hashlib.sha384(blocks).digest() and report.report_data == bytes(range(32))


def _resigned(body: bytes) -> bytes:
    """A body with a valid-looking signature slot (the parser never checks signatures)."""
    return body + bytes(96)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, b"CLSIMXXX", "unknown magic"),
        (8, b"\x00\x02", "version 2 is not supported"),
        (10, b"\x00\x02", "undefined bits"),
        (0x10, b"\x02", "debug byte must be 0 or 1"),
        (0x11, b"\x01", "reserved bytes"),
        (0x20, b" ", "chip id"),
        (0x26, b"\x00x", "chip id"),  # text after the NUL padding
    ],
)
def test_cpu_fields_are_strict(offset: int, value: bytes, message: str) -> None:
    body = bytearray(cpu_report()[:-96])
    body[offset : offset + len(value)] = value
    with pytest.raises(EvidenceMalformed, match=message) as caught:
        parse_report(_resigned(bytes(body)))
    assert caught.value.check == "report"


def test_empty_text_fields_and_wrong_lengths_are_refused() -> None:
    body = bytearray(gpu_report()[:-96])
    body[0x50:0x70] = bytes(32)
    with pytest.raises(EvidenceMalformed, match="driver version"):
        parse_report(_resigned(bytes(body)))
    with pytest.raises(EvidenceMalformed, match="272 bytes"):
        parse_report(cpu_report() + b"\x00")
    with pytest.raises(EvidenceMalformed, match="too short"):
        parse_report(b"CLSIMCPU")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:0x0B] + b"\x04" + b[0x0C:], "block 4 of 4 is truncated"),
        (lambda b: b[:0x0B] + b"\x02" + b[0x0C:], "unexpected bytes"),
        (lambda b: b[:0x0B] + b"\x00" + b[0x0C:0x90], "1 to 32 measurement blocks"),
        (lambda b: b[:0x90] + b"\x05" + b[0x91:], "strictly increasing"),
        (lambda b: b[:0x91] + b"\x00\x00" + b[0x93:], "1 to 64 bytes"),
        (lambda b: b[:0x91] + b"\xff\xff" + b[0x93:], "runs past the signature"),
        (lambda b: b[:0x90], "block 1 of 3 is truncated"),
        (lambda b: b[:0x80], "at least"),
    ],
)
def test_gpu_blocks_are_parsed_by_structure(mutate: Callable[[bytes], bytes], message: str) -> None:
    body = gpu_report()[:-96]
    with pytest.raises(EvidenceMalformed, match=message):
        parse_report(_resigned(mutate(body)))


def test_building_checks_the_same_fields() -> None:
    with pytest.raises(EvidenceMalformed, match="measurement must be 48 bytes"):
        CPU_CHIP.cpu_report(bytes(64), measurement=bytes(47))
    with pytest.raises(EvidenceMalformed, match="report data must be 64 bytes"):
        CPU_CHIP.cpu_report(bytes(63), measurement=MEASUREMENT)
    with pytest.raises(EvidenceMalformed, match="TCB version"):
        CPU_CHIP.cpu_report(bytes(64), measurement=MEASUREMENT, tcb_version=1 << 32)
    with pytest.raises(EvidenceMalformed, match="nonce must be 32 bytes"):
        gpu_report(bytes(31))
    with pytest.raises(EvidenceMalformed, match="VBIOS version"):
        gpu_report(vbios_version="x" * 33)
    with pytest.raises(EvidenceMalformed, match="1 to 32 measurement blocks"):
        CPU_CHIP.gpu_report(bytes(32), measurements=[])


def test_chip_identity_round_trips_and_rejects_junk() -> None:
    identity = ChipIdentity("gpu", "gpu-7", 300)
    assert ChipIdentity.of(_with_identity(identity.to_der())) == identity
    for junk in (b"\x30\x00", b"\x04\x01x", identity.to_der() + b"\x00", b"\x30\x03\x0c\x01x"):
        with pytest.raises(EvidenceMalformed) as caught:
            ChipIdentity.of(_with_identity(junk))
        assert caught.value.check in ("chip_identity", "der")
    bad_kind = ChipIdentity("tpm", "x", 1).to_der()
    with pytest.raises(EvidenceMalformed, match="out of range"):
        ChipIdentity.of(_with_identity(bad_kind))


def _with_identity(value: bytes) -> Certificate:
    """A certificate whose chip identity extension holds ``value`` (the signature is not checked here)."""
    cert = parse_certificate(CPU_CHIP.certificate.der)
    return replace(cert, extensions=(Extension(CHIP_IDENTITY_OID, False, value),))


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_evidence_malformed(data: bytes) -> None:
    for candidate in (data, b"CLSIMCPU\x00\x01" + data, b"CLSIMGPU\x00\x01" + data):
        with contextlib.suppress(EvidenceMalformed):
            parse_report(candidate)


@FUZZ
@given(st.sampled_from([cpu_report(), gpu_report()]), st.data())
def test_truncated_and_spliced_reports_raise_only_evidence_malformed(report: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(report)))
    junk = data.draw(st.binary(max_size=40))
    for candidate in (report[:cut], report[:cut] + junk + report[cut:], report[:cut] + junk):
        with contextlib.suppress(EvidenceMalformed):
            parse_report(candidate)


@FUZZ
@given(
    st.one_of(
        st.dictionaries(st.sampled_from(["report", "chip_certificate", "x"]), st.one_of(st.text(), st.integers())),
        st.none(),
        st.lists(st.integers()),
    )
)
def test_evidence_json_is_strict(data: object) -> None:
    with contextlib.suppress(EvidenceMalformed):
        Evidence.from_json(data)  # type: ignore[arg-type]


def test_evidence_json_round_trips() -> None:
    evidence = CPU_CHIP.evidence(cpu_report())
    assert Evidence.from_json(evidence.to_json()) == evidence
    with pytest.raises(EvidenceMalformed, match="base64"):
        Evidence.from_json({**evidence.to_json(), "report": "!!"})
    with pytest.raises(EvidenceMalformed, match="exactly"):
        Evidence.from_json({**evidence.to_json(), "extra": ""})
    assert base64.b64decode(evidence.to_json()["chip_certificate"]) == CPU_CHIP.certificate.der

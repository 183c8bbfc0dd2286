"""SPDM and opaque-data parsing: field by field against attestation-sdk's expected parses, and every malformation."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from tests.attest.nvgpu.nvvectors import NV, gpu
from tests.attest.vectors import read

from cloister.attest.nvgpu.opaque import field_name, format_vbios_version, parse_opaque
from cloister.attest.nvgpu.spdm import GET_MEASUREMENTS, MEASUREMENTS, parse_hex_report, parse_report
from cloister.errors import EvidenceMalformed

NVSDK = gpu("nvsdk_hopperAttestationReport.txt", "nvsdk_hopperCertChain.txt").report
REQUEST = 37


def hex0x(value: int | bytes) -> str:
    return f"0x{value:02x}" if isinstance(value, int) else "0x" + value.hex()


def test_request_matches_the_sdk_parse() -> None:
    expected = json.loads(read(NV + "nvsdk_spdm_req_parsed_output.json"))
    request = parse_report(NVSDK).request
    assert NVSDK[1] == GET_MEASUREMENTS
    assert {
        "SPDMVersion": hex0x(request.version),
        "RequestResponseCode": hex0x(NVSDK[1]),
        "Param1": hex0x(request.param1),
        "Param2": hex0x(request.param2),
        "Nonce": hex0x(request.nonce),
        "SlotIDParam": hex0x(request.slot_id),
    } == expected


def test_response_matches_the_sdk_parse() -> None:
    expected = json.loads(read(NV + "nvsdk_spdm_parsed_output.json"))
    response = parse_report(NVSDK).response
    assert NVSDK[REQUEST + 1] == MEASUREMENTS
    assert hex0x(response.version) == expected["SPDMVersion"]
    assert hex0x(NVSDK[REQUEST + 1]) == expected["RequestResponseCode"]
    assert hex0x(response.param1) == expected["Param1"]
    assert hex0x(response.param2) == expected["Param2"]
    assert len(response.blocks) == expected["NumberOfBlocks"] == expected["MeasurementRecord"]["NumberOfBlocks"]
    assert len(response.record) == expected["MeasurementRecordLength"]
    assert hex0x(response.nonce) == expected["Nonce"]
    assert len(response.opaque) == expected["OpaqueLength"]
    assert hex0x(response.signature) == expected["Signature"]
    blocks = {
        str(block.index): {
            "DMTFSpecMeasurementValueType": block.value_type,
            "DMTFSpecMeasurementValueSize": len(block.value),
            "DMTFSpecMeasurementValue": hex0x(block.value),
        }
        for block in response.blocks
    }
    assert blocks == expected["MeasurementRecord"]["MeasurementBlocks"]


def test_opaque_data_matches_the_sdk_parse() -> None:
    expected = json.loads(read(NV + "nvsdk_spdm_parsed_output.json"))["OpaqueData"]["OpaqueDataField"]
    opaque = parse_opaque(parse_report(NVSDK).response.opaque)
    ours: dict[str, object] = {f"OPAQUE_FIELD_ID_{field_name(kind)}": hex0x(value) for kind, value in opaque.fields}
    ours["OPAQUE_FIELD_ID_MSRSCNT"] = list(opaque.measurement_counts)
    assert {name: ours[name] for name in expected} == expected
    # The SDK's expected parse predates the two newest fields; they are the only extras.
    assert set(ours) - set(expected) == {"OPAQUE_FIELD_ID_OPAQUE_DATA_VERSION", "OPAQUE_FIELD_ID_FEATURE_FLAG"}
    assert opaque.driver_version == "580.159.03"
    assert opaque.vbios_version == "96.00.74.00.20"
    assert opaque.nvdec0_status == 0x55


def test_signed_region_is_request_and_response_up_to_the_opaque_data() -> None:
    report = parse_report(NVSDK)
    assert report.signed == NVSDK[: len(NVSDK) - 96]
    assert report.padding == 0
    assert parse_report(NVSDK + bytes(7)).padding == 7


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0074009620000000", "96.00.74.00.20"),
        ("005e009601000000", "96.00.5E.00.01"),
        ("008800970f000000", "97.00.88.00.0F"),
    ],
)
def test_vbios_version_text(value: str, text: str) -> None:
    assert format_vbios_version(bytes.fromhex(value)) == text


def test_hex_text_is_read_with_whitespace() -> None:
    assert parse_hex_report(b"11e0 01ff\n00") == bytes.fromhex("11e001ff00")
    with pytest.raises(EvidenceMalformed):
        parse_hex_report(b"11e0zz")


def patched(offset: int, value: bytes) -> bytes:
    return NVSDK[:offset] + value + NVSDK[offset + len(value) :]


RESPONSE = REQUEST
RECORD = RESPONSE + 8


def _opaque_offset() -> int:
    report = parse_report(NVSDK)
    return RECORD + len(report.response.record) + 32


MALFORMED: list[tuple[str, Callable[[], bytes]]] = [
    ("empty", lambda: b""),
    ("request version 1.2", lambda: patched(0, b"\x12")),
    ("not GET_MEASUREMENTS", lambda: patched(1, b"\xe1")),
    ("no signature requested", lambda: patched(2, b"\x00")),
    ("one measurement requested", lambda: patched(3, b"\x01")),
    ("response version differs", lambda: patched(RESPONSE, b"\x10")),
    ("not MEASUREMENTS", lambda: patched(RESPONSE + 1, b"\x61")),
    ("slot differs", lambda: patched(RESPONSE + 3, b"\x01")),
    ("block count too high", lambda: patched(RESPONSE + 4, b"\x41")),
    ("record length too long", lambda: patched(RESPONSE + 5, b"\xff\xff\xff")),
    ("record length cuts a block", lambda: patched(RESPONSE + 5, (3520 - 10).to_bytes(3, "little"))),
    ("not DMTF", lambda: patched(RECORD + 1, b"\x02")),
    ("DMTF size disagrees", lambda: patched(RECORD + 5, b"\x2f")),
    ("block index twice", lambda: patched(RECORD + 55, b"\x01")),
    ("opaque length too long", lambda: patched(_opaque_offset(), b"\xff\xff")),
    ("signature cut", lambda: NVSDK[:-1]),
    ("garbage after the signature", lambda: NVSDK + b"\x00\x01"),
    ("request only", lambda: NVSDK[:REQUEST]),
]


@pytest.mark.parametrize(("name", "make"), MALFORMED, ids=[name for name, _ in MALFORMED])
def test_malformed_reports_are_refused(name: str, make: Callable[[], bytes]) -> None:
    with pytest.raises(EvidenceMalformed) as caught:
        parse_report(make())
    assert caught.value.check == "spdm"


def tlv(kind: int, value: bytes) -> bytes:
    return kind.to_bytes(2, "little") + len(value).to_bytes(2, "little") + value


VERSIONS = tlv(3, b"550.90.07\x00") + tlv(6, bytes.fromhex("009f009601000000"))


def test_minimal_opaque_data() -> None:
    opaque = parse_opaque(VERSIONS)
    assert (opaque.driver_version, opaque.vbios_version) == ("550.90.07", "96.00.9F.00.01")
    assert opaque.fwid is None and opaque.nvdec0_status is None and opaque.measurement_counts == ()
    assert opaque.named() == {"DRIVER_VERSION": b"550.90.07\x00".hex(), "VBIOS_VERSION": "009f009601000000"}
    assert parse_opaque(VERSIONS + tlv(99, b"x")).named()["TYPE_99"] == "78"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("no versions", b""),
        ("no VBIOS version", tlv(3, b"550\x00")),
        ("a field twice", VERSIONS + tlv(3, b"1\x00")),
        ("VBIOS version of 7 bytes", tlv(3, b"5\x00") + tlv(6, bytes(7))),
        ("unprintable driver version", tlv(3, b"5\x01") + tlv(6, bytes(8))),
        ("empty driver version", tlv(3, b"\x00") + tlv(6, bytes(8))),
        ("short FWID", VERSIONS + tlv(20, bytes(47))),
        ("NVDEC0 status of 2 bytes", VERSIONS + tlv(11, b"UU")),
        ("MSRSCNT not 32-bit", VERSIONS + tlv(12, bytes(6))),
        ("truncated header", VERSIONS + b"\x03"),
        ("field past the end", VERSIONS + tlv(7, b"abc")[:-1]),
    ],
)
def test_malformed_opaque_data_is_refused(name: str, data: bytes) -> None:
    with pytest.raises(EvidenceMalformed) as caught:
        parse_opaque(data)
    assert caught.value.check == "opaque_data"

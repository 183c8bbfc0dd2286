"""Parsing every TDX quote in the vectors into the field values MANIFEST §2 states, and refusing malformed ones."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.vectors import read

from cloister.attest.tdx.quote import BODY_TDX10, BODY_TDX15, parse_quote
from cloister.errors import EvidenceMalformed

SPR = "tdx/gotdx_tdx_prod_quote_SPR_E4.dat"
V5 = "tdx/gotdx_quote_v5_sample.dat"
COS = "tdx/gotdx_cos-113-tdx-quote.dat"
Q4 = "tdx/trustee_tdx_quote_4.dat"
Q5 = "tdx/trustee_tdx_quote_5.dat"
Q6 = "tdx/trustee_tdx_quote_6.dat"
AZURE = "tdx/trustee_az-tdx-vtpm_td-quote.bin"
ALL_QUOTES = (SPR, V5, COS, Q4, Q5, Q6, AZURE)


def test_spr_e4_fields() -> None:
    quote = parse_quote(read(SPR))
    header, body = quote.header, quote.body
    assert (header.version, header.attestation_key_type, header.tee_type) == (4, 2, 0x81)
    assert (header.qe_svn, header.pce_svn) == (0, 0)
    assert header.qe_vendor_id.hex() == "939a7233f79c4ca9940a0db3957f0607"
    assert quote.body_type == BODY_TDX10
    assert body.tee_tcb_svn.hex() == "03000400000000000000000000000000"
    assert body.mr_seam.hex() == (
        "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656"
    )
    assert body.mr_signer_seam == bytes(48)
    assert body.td_attributes.hex() == "0000004000000000"
    assert body.xfam.hex() == "e71a060000000000"
    assert body.mr_td.hex() == (
        "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb"
    )
    assert body.mr_config_id == body.mr_owner == body.mr_owner_config == bytes(48)
    assert body.rtmrs[0].hex().startswith("2927da70") and body.rtmrs[0].hex().endswith("6593f32a")
    assert body.rtmrs[1].hex().startswith("2c700b8b") and body.rtmrs[1].hex().endswith("b2cacb61")
    assert body.rtmrs[2].hex().startswith("8652f0ca") and body.rtmrs[2].hex().endswith("4eb4424e")
    assert body.rtmrs[3] == bytes(48)
    assert body.report_data.hex() == (
        "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545"
        "eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113"
    )
    assert body.tee_tcb_svn2 is None and body.mr_service_td is None


def test_trailing_bytes_are_not_part_of_the_quote() -> None:
    """The signed length comes from the structure: ASCII text and zero padding after it are ignored."""
    spr = read(SPR)
    assert parse_quote(spr).size == 4935 and spr[4935:] == b"\nextra bytes(only for testing purpose)\n"
    cos = read(COS)
    assert (len(cos), parse_quote(cos).size) == (8000, 4935) and cos[4935:] == bytes(8000 - 4935)
    for name in (Q6, AZURE):
        data = read(name)
        assert (len(data), parse_quote(data).size) == (5006, 4936) and data[4936:] == bytes(70)
    assert parse_quote(spr[:4935]) == parse_quote(spr)


def test_v5_tdx15_bodies() -> None:
    v5 = parse_quote(read(V5))
    assert (v5.header.version, v5.body_type) == (5, BODY_TDX15)
    assert v5.body.tee_tcb_svn.hex().startswith("0b010400")
    assert v5.body.tee_tcb_svn2 is not None and v5.body.tee_tcb_svn2.hex().startswith("0d010400")
    assert v5.body.mr_service_td == bytes(48)
    assert v5.body.mr_seam.hex().startswith("7bf06328") and v5.body.mr_seam.hex().endswith("5a3c9a9d")
    assert v5.body.mr_td.hex() == (
        "7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3ee19747dda8f750c3bc8f876"
    )
    assert v5.body.td_attributes.hex() == "0000001000000000"
    assert v5.body.report_data.hex().startswith("945eaacf") and v5.body.report_data.hex().endswith("31c25c3a")
    q5 = parse_quote(read(Q5))
    assert (q5.header.version, q5.body_type) == (5, BODY_TDX15)
    assert q5.body.tee_tcb_svn.hex().startswith("05010200")
    assert q5.body.tee_tcb_svn2 is not None and q5.body.tee_tcb_svn2.hex().startswith("05010200")
    assert q5.body.mr_service_td is not None and q5.body.mr_service_td.hex().startswith("383c87d3")
    assert q5.body.mr_service_td.hex().endswith("7a5a033d")
    assert q5.body.mr_td.hex().startswith("dfba221b") and q5.body.mr_td.hex().endswith("3886400a")


def test_other_v4_quotes() -> None:
    cos = parse_quote(read(COS)).body
    assert cos.report_data == read("tdx/gotdx_nonce.dat") == bytes(64)
    assert cos.mr_td.hex().startswith("dae67181") and cos.mr_td.hex().endswith("4231f94a")
    assert [rtmr.hex()[:8] for rtmr in cos.rtmrs[:3]] == ["3fa2f61f", "f62dbc07", "4969684d"]
    q4 = parse_quote(read(Q4)).body
    assert q4.td_attributes.hex() == "0100001000000000"
    assert q4.mr_td.hex() == (
        "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031"
    )
    assert q4.rtmrs[0].hex().endswith("f496b288") and q4.rtmrs[1].hex().endswith("dca3a596")
    q6 = parse_quote(read(Q6)).body
    assert q6.tee_tcb_svn.hex().startswith("05030200") and q6.rtmrs[2] != bytes(48)
    assert q6.mr_td.hex().startswith("21e8dead") and q6.mr_td.hex().endswith("ffbb1e88")
    assert q6.report_data.hex().startswith("26cae1c7") and q6.report_data[48:] == bytes(16)
    azure = parse_quote(read(AZURE)).body
    assert azure.td_attributes == bytes(8) and azure.rtmrs == (bytes(48),) * 4
    assert azure.mr_td.hex().startswith("024a32b0") and azure.report_data[32:] == bytes(32)


def test_qe_report_and_binding_fields() -> None:
    for name in ALL_QUOTES:
        quote = parse_quote(read(name))
        assert quote.qe_report.mr_signer.hex() == "dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5"
        assert quote.qe_report.isv_prod_id == 2
        assert len(quote.qe_auth_data) == 32 and quote.pck_chain.startswith(b"-----BEGIN CERTIFICATE-----")


def test_go_tdx_guest_format_mutations() -> None:
    """TestNegativeVerification's parse-level cases: version byte and signature data size."""
    spr = bytearray(read(SPR))
    spr[0x00] = 3
    with pytest.raises(EvidenceMalformed, match="quote format not supported") as info:
        parse_quote(bytes(spr))
    assert info.value.check == "quote_format"
    spr = bytearray(read(SPR))
    spr[0x278] = 0x10
    with pytest.raises(EvidenceMalformed, match="declares 0x1045 bytes but the signature data leaves 0xf8a"):
        parse_quote(bytes(spr))


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (2, 3, "attestation key type 3"),
        (4, 0x00, "not TDX"),
        (48, 1, "body type 1"),  # v5 only: the descriptor
        (50, 0x00, "body size"),
    ],
)
def test_bad_header_and_descriptor(offset: int, value: int, message: str) -> None:
    data = bytearray(read(V5))
    data[offset] = value
    with pytest.raises(EvidenceMalformed, match=message):
        parse_quote(bytes(data))


def test_bad_certification_data_types() -> None:
    data = bytearray(read(SPR))
    data[632 + 4 + 128] = 5  # outer certification data type 6 → 5
    with pytest.raises(EvidenceMalformed, match="not a QE report"):
        parse_quote(bytes(data))
    inner = 632 + 4 + 134 + 384 + 64 + 2 + 32
    data = bytearray(read(SPR))
    assert struct.unpack_from("<H", data, inner)[0] == 5
    data[inner] = 1
    with pytest.raises(EvidenceMalformed, match="not a PCK certificate chain"):
        parse_quote(bytes(data))


def test_every_truncation_is_refused() -> None:
    spr = read(SPR)[:4935]
    for end in range(0, 4935, 3):
        with pytest.raises(EvidenceMalformed):
            parse_quote(spr[:end])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=6000))
def test_random_bytes_raise_only_evidence_malformed(data: bytes) -> None:
    with contextlib.suppress(EvidenceMalformed):
        parse_quote(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 4934), st.binary(min_size=1, max_size=8))
def test_spliced_bytes_raise_only_evidence_malformed(offset: int, patch: bytes) -> None:
    data = bytearray(read(SPR)[:4935])
    data[offset : offset + len(patch)] = patch
    with contextlib.suppress(EvidenceMalformed):
        parse_quote(bytes(data))

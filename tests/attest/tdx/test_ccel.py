"""RTMR replay of the GCE COS-113 CCEL event log against its quote (go-tdx-guest rtmr/ccel_test.go)."""

from __future__ import annotations

import contextlib
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.vectors import read

from cloister.attest import tdx
from cloister.attest.checks import Checklist
from cloister.attest.tdx.ccel import log_area_length, parse_event_log
from cloister.errors import EvidenceMalformed, VerificationFailed

COS = "tdx/gotdx_cos-113-tdx-quote.dat"
TABLE = "tdx/gotdx_ccel_table.dat"
DATA = "tdx/gotdx_ccel_data.dat"
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_replay_matches_the_quote() -> None:
    rtmrs = tdx.replay_ccel(read(TABLE), read(DATA))
    assert rtmrs == tdx.parse_quote(read(COS)).body.rtmrs
    assert rtmrs[3] == bytes(48)


def test_event_log_structure() -> None:
    assert log_area_length(read(TABLE)) == 0x40000 == len(read(DATA))
    events = parse_event_log(read(DATA))
    assert len(events) == 43
    assert [[event.mr_index for event in events].count(index) for index in (1, 2, 3, 4)] == [16, 7, 20, 0]
    assert events[0].data[1:9] == b"TdxTable" and events[-1].data.startswith(b"Exit Boot Services Returned")


def test_verify_with_the_event_log() -> None:
    checklist = Checklist()
    evidence = tdx.Evidence(read(COS), ccel_table=read(TABLE), ccel_data=read(DATA))
    claims = tdx.verify(evidence, tdx.VerifyOptions(now=NOW), checklist=checklist)
    assert claims.rtmrs_replayed and checklist.items[-1].name == "rtmr_replay"
    assert "43 events" in checklist.items[-1].detail


def test_a_log_from_another_boot_is_refused() -> None:
    evidence = tdx.Evidence(read("tdx/trustee_tdx_quote_4.dat"), ccel_table=read(TABLE), ccel_data=read(DATA))
    with pytest.raises(VerificationFailed, match="RTMR0 replayed from the event log") as info:
        tdx.verify(evidence, tdx.VerifyOptions(now=NOW))
    assert info.value.check == "rtmr_replay"


def test_a_tampered_digest_or_dropped_event_is_refused() -> None:
    data = bytearray(read(DATA))
    first_event = 32 + 33
    data[first_event + 14 + 5] ^= 1  # a byte of the first event's SHA-384 digest
    with pytest.raises(VerificationFailed, match="RTMR0"):
        tdx.verify(tdx.Evidence(read(COS), ccel_table=read(TABLE), ccel_data=bytes(data)), tdx.VerifyOptions(now=NOW))
    # Drop the last event ("Exit Boot Services Returned…", MR index 2, 106 bytes ending at 18101) by erasing it.
    data = bytearray(read(DATA))
    data[17995:18101] = b"\xff" * 106
    assert len(parse_event_log(bytes(data))) == 42
    with pytest.raises(VerificationFailed, match="RTMR1"):
        tdx.verify(tdx.Evidence(read(COS), ccel_table=read(TABLE), ccel_data=bytes(data)), tdx.VerifyOptions(now=NOW))


def test_half_an_event_log_is_malformed() -> None:
    with pytest.raises(EvidenceMalformed) as info:
        tdx.verify(tdx.Evidence(read(COS), ccel_table=read(TABLE)), tdx.VerifyOptions(now=NOW))
    assert info.value.check == "event_log"


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [(0, 0x41, "starting with 'CCEL'"), (9, 0x00, "checksum"), (36, 1, "CC type 1")],
)
def test_bad_ccel_table(offset: int, value: int, message: str) -> None:
    table = bytearray(read(TABLE))
    table[offset] = value
    if offset == 36:
        table[9] = (table[9] + 1) % 256  # keep the checksum right so the CC type is what fails
    with pytest.raises(EvidenceMalformed, match=message):
        tdx.replay_ccel(bytes(table), read(DATA))


def test_bad_logs() -> None:
    data = read(DATA)
    with pytest.raises(EvidenceMalformed, match="Spec ID"):
        parse_event_log(data[:32] + b"X" + data[33:])
    with pytest.raises(EvidenceMalformed, match="not EV_NO_ACTION"):
        parse_event_log(data[:4] + struct.pack("<I", 4) + data[8:])
    with pytest.raises(EvidenceMalformed, match="MR index 7"):
        parse_event_log(data[:65] + struct.pack("<I", 7) + data[69:])
    with pytest.raises(EvidenceMalformed, match="truncated"):
        parse_event_log(data[:1000])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=56))
def test_random_logs_raise_only_evidence_malformed(data: bytes, table: bytes) -> None:
    for call in (lambda: parse_event_log(data), lambda: tdx.replay_ccel(table, data)):
        with contextlib.suppress(EvidenceMalformed):
            call()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 18200), st.binary(min_size=1, max_size=4))
def test_patched_real_log_raises_only_evidence_malformed(offset: int, patch: bytes) -> None:
    data = bytearray(read(DATA)[:18200])
    data[offset : offset + len(patch)] = patch
    with contextlib.suppress(EvidenceMalformed):
        parse_event_log(bytes(data))

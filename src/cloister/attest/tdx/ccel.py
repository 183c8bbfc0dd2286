"""RTMR replay of a TD's CCEL event log (the ACPI CCEL table plus the log area it points to).

The log is a TCG PC Client crypto-agile event log: one SHA-1-format TCG_PCR_EVENT carrying the "Spec ID Event03"
(which digest algorithms follow, and their sizes), then TCG_PCR_EVENT2 records. In a TD the record's index is a CC
measurement-register index: 1..4 extend RTMR0..3 (0 is MRTD, which the log never extends). Replaying every SHA-384
digest from zeros gives the RTMRs the TDX module would report; the quote signs the real ones.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cloister.errors import EvidenceMalformed

CCEL_TABLE_SIZE = 56
CC_TYPE_TDX = 2
EV_NO_ACTION = 0x3
SHA384 = 0x000C
_SPEC_ID = b"Spec ID Event03\0"
_END = 0xFFFFFFFF


def _malformed(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"CCEL event log: {message}", check="event_log")


@dataclass(frozen=True)
class CcelEvent:
    mr_index: int
    event_type: int
    digest: bytes
    """The SHA-384 digest extended into the register (zeros-only log events are not extended)."""
    data: bytes


def log_area_length(table: bytes) -> int:
    """Validate the ACPI CCEL table and return its log area minimum length (LAML)."""
    if len(table) != CCEL_TABLE_SIZE or table[:4] != b"CCEL":
        raise _malformed(f"the CCEL ACPI table must be {CCEL_TABLE_SIZE} bytes starting with 'CCEL'")
    if int.from_bytes(table[4:8], "little") != len(table) or sum(table) % 256:
        raise _malformed("the CCEL ACPI table length or checksum is wrong")
    if table[36] != CC_TYPE_TDX:
        raise _malformed(f"CC type {table[36]} is not TDX (2)")
    return int.from_bytes(table[40:48], "little")


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, size: int, what: str) -> bytes:
        if self.offset + size > len(self.data):
            raise _malformed(f"truncated at {what} (offset {self.offset})")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])


def _digest_sizes(spec: bytes) -> dict[int, int]:
    """The algorithm → digest size table of the Spec ID event."""
    cursor = _Cursor(spec)
    if cursor.take(16, "Spec ID signature") != _SPEC_ID:
        raise _malformed("the first event is not a 'Spec ID Event03' (only crypto-agile logs are supported)")
    cursor.take(8, "Spec ID platform class and version")
    sizes: dict[int, int] = {}
    for _ in range(cursor.u32("Spec ID algorithm count")):
        algorithm, size = cursor.u16("algorithm id"), cursor.u16("digest size")
        sizes[algorithm] = size
    cursor.take(cursor.u8("vendor info size"), "vendor info")
    if cursor.offset != len(spec):
        raise _malformed("the Spec ID event has trailing bytes")
    if sizes.get(SHA384) != 48:
        raise _malformed("the log does not carry SHA-384 digests")
    return sizes


def parse_event_log(data: bytes) -> tuple[CcelEvent, ...]:
    """All measured events, in order; parsing stops at the first record whose index and type are 0xFFFFFFFF."""
    cursor = _Cursor(data)
    cursor.take(4, "first event index")
    if cursor.u32("first event type") != EV_NO_ACTION:
        raise _malformed("the first event is not EV_NO_ACTION")
    cursor.take(20, "first event digest")
    sizes = _digest_sizes(cursor.take(cursor.u32("Spec ID size"), "Spec ID event"))
    events: list[CcelEvent] = []
    while len(data) - cursor.offset >= 8:
        mr_index, event_type = struct.unpack_from("<II", data, cursor.offset)
        if mr_index == _END and event_type == _END:
            break
        cursor.offset += 8
        digests = {}
        for _ in range(cursor.u32("digest count")):
            algorithm = cursor.u16("digest algorithm")
            if algorithm not in sizes:
                raise _malformed(f"digest algorithm 0x{algorithm:04x} is not declared in the Spec ID event")
            digests[algorithm] = cursor.take(sizes[algorithm], "digest")
        event = cursor.take(cursor.u32("event size"), "event data")
        if event_type == EV_NO_ACTION:
            continue
        if not 1 <= mr_index <= 4:
            raise _malformed(f"event {len(events)} extends MR index {mr_index}; only 1..4 (RTMR0..3) exist")
        if SHA384 not in digests:
            raise _malformed(f"event {len(events)} has no SHA-384 digest")
        events.append(CcelEvent(mr_index, event_type, digests[SHA384], event))
    return tuple(events)


def replay_events(events: tuple[CcelEvent, ...]) -> tuple[bytes, bytes, bytes, bytes]:
    rtmrs = [bytes(48)] * 4
    for event in events:
        index = event.mr_index - 1
        rtmrs[index] = hashlib.sha384(rtmrs[index] + event.digest).digest()
    return rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]


def replay_ccel(table: bytes, data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """RTMR0..3 as the CCEL log (ACPI table ``table``, log area ``data``) says they should be."""
    return replay_events(parse_event_log(data[: log_area_length(table)]))

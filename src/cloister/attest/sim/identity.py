"""The chip identity a sim chip certificate carries: which kind of chip, which chip, which TCB version.

It is a non-critical X.509 extension under a private OID (the ``2.25`` UUID arc, which needs no registration)::

    ChipIdentity ::= SEQUENCE { kind UTF8String ("cpu" | "gpu"), chipId UTF8String, tcbVersion INTEGER }

A verifier accepts a report only from a chip whose certified identity matches the report's chip id, kind and TCB
version, like an AMD VCEK is bound to one chip id and one reported TCB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cloister.attest.der import INTEGER, SEQUENCE, UTF8_STRING, Certificate, children, decode_integer, expect, read_tlv
from cloister.errors import EvidenceMalformed

CHIP_IDENTITY_OID: Final = "2.25.80802189749976213468447052856239828684.1"
KINDS: Final = ("cpu", "gpu")


def _tlv(tag: int, value: bytes) -> bytes:
    size = len(value)
    if size < 0x80:
        return bytes([tag, size]) + value
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + value


def _bad(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"sim chip certificate: {message}", check="chip_identity")


@dataclass(frozen=True)
class ChipIdentity:
    kind: str
    chip_id: str
    tcb_version: int

    def to_der(self) -> bytes:
        tcb = self.tcb_version.to_bytes(self.tcb_version.bit_length() // 8 + 1, "big")
        return _tlv(
            SEQUENCE,
            _tlv(UTF8_STRING, self.kind.encode()) + _tlv(UTF8_STRING, self.chip_id.encode()) + _tlv(INTEGER, tcb),
        )

    @classmethod
    def of(cls, cert: Certificate) -> ChipIdentity:
        """The identity ``cert`` carries; a certificate without one is not a sim chip certificate."""
        extension = cert.extension(CHIP_IDENTITY_OID)
        if extension is None:
            raise _bad(f"{cert} has no chip identity extension ({CHIP_IDENTITY_OID}); it is not a sim chip")
        top, end = read_tlv(extension.value, what="chip identity")
        if end != len(extension.value):
            raise _bad("trailing bytes after the chip identity")
        parts = children(expect(top, SEQUENCE, "chip identity").value, what="chip identity")
        if len(parts) != 3:
            raise _bad("the chip identity has three fields: kind, chip id, TCB version")
        try:
            kind = expect(parts[0], UTF8_STRING, "chip kind").value.decode()
            chip_id = expect(parts[1], UTF8_STRING, "chip id").value.decode()
        except UnicodeDecodeError:
            raise _bad("chip kind and id must be UTF-8") from None
        tcb_version = decode_integer(expect(parts[2], INTEGER, "TCB version").value)
        if kind not in KINDS or tcb_version < 0:
            raise _bad(f"kind {kind!r} / TCB version {tcb_version} out of range")
        return cls(kind, chip_id, tcb_version)

"""Dead Simple Signing Envelope v1 (secure-systems-lab/dsse), signed with Ed25519 loader keys.

The JSON envelope is ``{"payload": base64, "payloadType": str, "signatures": [{"keyid", "sig"}]}``; each
signature covers PAE(payloadType, payload) (:func:`cloister.crypto.identity.dsse_pae`), so the type is
authenticated together with the bytes. ``keyid`` is the signer's Cloister address: a hint only, never trusted.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from cloister.attest.checks import Checklist
from cloister.crypto.canonical import canonical_json
from cloister.crypto.identity import Identity, address_of, verify_dsse_signature
from cloister.errors import InvalidSignature, MalformedInput
from cloister.provenance.fields import check_items, check_text, json_list, json_object, malformed, parse_json

MAX_ENVELOPE = 1 << 20
"""Largest envelope accepted, in bytes of JSON text: manifests are a few KiB."""
MAX_SIGNATURES = 16
MAX_SIGNATURE = 512
MAX_KEYID = 256
_TO_STANDARD = str.maketrans("-_", "+/")


def _b64decode(value: object, what: str) -> bytes:
    """Standard or URL-safe padded base64 (verifiers must accept both), in its one canonical spelling."""
    if not isinstance(value, str):
        malformed(f"{what} must be a base64 string")
    urlsafe = "-" in value or "_" in value
    if urlsafe and ("+" in value or "/" in value):
        malformed(f"{what} mixes the standard and URL-safe base64 alphabets")
    text = value.translate(_TO_STANDARD) if urlsafe else value
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        malformed(f"{what} is not valid padded base64")
    if base64.b64encode(raw).decode() != text:
        malformed(f"{what} is not canonical base64 (stray bits in the last character)")
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Signature:
    """One DSSE signature; ``keyid`` is empty when the signer gave none."""

    sig: bytes
    keyid: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.sig, bytes) or not 0 < len(self.sig) <= MAX_SIGNATURE:
            malformed(f"a DSSE signature must be 1 to {MAX_SIGNATURE} bytes")
        if self.keyid != "":
            check_text(self.keyid, "a DSSE keyid", MAX_KEYID)

    def to_json(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "sig": _b64encode(self.sig)} if self.keyid else {"sig": _b64encode(self.sig)}

    @classmethod
    def from_json(cls, data: object, what: str) -> Signature:
        names = ("keyid", "sig") if isinstance(data, dict) and "keyid" in data else ("sig",)
        fields = json_object(data, what, names)
        keyid = fields.get("keyid", "")
        if not isinstance(keyid, str):
            malformed(f"{what}.keyid must be a string")
        return cls(_b64decode(fields["sig"], f"{what}.sig"), keyid)


@dataclass(frozen=True)
class Envelope:
    """A parsed DSSE envelope. Its canonical JSON (:meth:`to_bytes`) is what Cloister publishes and hashes."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        check_text(self.payload_type, "a DSSE payloadType")
        if not isinstance(self.payload, bytes) or len(self.payload) > MAX_ENVELOPE:
            malformed(f"a DSSE payload must be at most {MAX_ENVELOPE} bytes")
        check_items(self.signatures, "a DSSE envelope's signatures", Signature, min_items=1, max_items=MAX_SIGNATURES)
        if len({s.sig for s in self.signatures}) != len(self.signatures):
            malformed("a DSSE envelope lists the same signature twice")

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": _b64encode(self.payload),
            "payloadType": self.payload_type,
            "signatures": [s.to_json() for s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, data: object) -> Envelope:
        fields = json_object(data, "DSSE envelope", ("payload", "payloadType", "signatures"))
        signatures = json_list(fields["signatures"], "DSSE envelope signatures", MAX_SIGNATURES)
        return cls(
            fields["payloadType"],
            _b64decode(fields["payload"], "DSSE payload"),
            tuple(Signature.from_json(item, f"DSSE signature {i}") for i, item in enumerate(signatures)),
        )

    @classmethod
    def parse(cls, data: bytes | str) -> Envelope:
        """Parse envelope JSON text; raise :class:`MalformedInput` saying what is wrong."""
        return cls.from_json(parse_json(data, "a DSSE envelope", MAX_ENVELOPE))


def sign_envelope(payload_type: str, payload: bytes, signer: Identity) -> Envelope:
    """Wrap ``payload`` in an envelope signed by ``signer`` (keyid = its address)."""
    return Envelope(payload_type, payload, (Signature(signer.sign_dsse(payload_type, payload), signer.address),))


def verify_envelope(
    envelope: Envelope,
    *,
    payload_type: str,
    public_keys: Collection[bytes],
    checklist: Checklist | None = None,
) -> bytes:
    """Return the payload if one signature verifies with one of ``public_keys`` and the type is ``payload_type``.

    Signatures by other keys are skipped, as DSSE prescribes; keyids are not consulted. Records the
    ``signature`` and ``payload type`` checks; raises :class:`InvalidSignature` or :class:`MalformedInput`.
    """
    checklist = checklist if checklist is not None else Checklist()
    signers = ", ".join(address_of(key) for key in public_keys)
    with checklist.run("signature", f"DSSE v1 Ed25519 signature by {signers}"):
        if not any(_signed_by(envelope, key, s) for key in public_keys for s in envelope.signatures):
            raise InvalidSignature(
                f"no signature in the envelope verifies with the expected key ({signers or 'none given'}): "
                "the envelope was altered or signed by someone else; do not trust its content"
            )
    with checklist.run("payload type", payload_type):
        if envelope.payload_type != payload_type:
            raise MalformedInput(f"the envelope carries {envelope.payload_type!r}, expected {payload_type!r}")
    return envelope.payload


def _signed_by(envelope: Envelope, key: bytes, signature: Signature) -> bool:
    try:
        verify_dsse_signature(key, envelope.payload_type, envelope.payload, signature.sig)
    except InvalidSignature:
        return False
    return True

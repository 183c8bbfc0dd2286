"""Account identities: an Ed25519 key that signs and an X25519 key that others seal to.

Signatures are domain-separated: the signed bytes are ``domain || 0x00 || message``, so a signature made for one
purpose (a transaction, an order report) can never be replayed as another. The one other thing a key signs is a
DSSE pre-authentication encoding (:func:`dsse_pae`), which starts with ``DSSEv1``, a prefix no domain may take.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from cloister.errors import InvalidSignature, MalformedInput

ADDRESS_PREFIX = "cl"
DSSE_PREFIX = b"DSSEv1"
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()


def _key_bytes(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise MalformedInput(f"{what} must be 32 bytes")
    return bytes(value)


def address_of(signing_public_key: bytes) -> str:
    """Ledger address of an account: ``cl`` + the first 20 bytes of SHA-256 over its Ed25519 public key."""
    key = _key_bytes(signing_public_key, "an Ed25519 public key")
    return ADDRESS_PREFIX + hashlib.sha256(b"cloister/address/v1\x00" + key).digest()[:20].hex()


def is_address(text: object) -> bool:
    if not isinstance(text, str) or len(text) != len(ADDRESS_PREFIX) + 40 or not text.startswith(ADDRESS_PREFIX):
        return False
    try:
        bytes.fromhex(text[len(ADDRESS_PREFIX) :])
    except ValueError:
        return False
    return text == text.lower()


def _signed_bytes(domain: str, message: bytes) -> bytes:
    if "\x00" in domain:
        raise MalformedInput("a signing domain may not contain NUL")
    if domain.startswith(DSSE_PREFIX.decode()):
        raise MalformedInput(f"a signing domain may not start with {DSSE_PREFIX.decode()!r} (kept for DSSE)")
    return domain.encode() + b"\x00" + message


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding, the exact bytes a DSSE signature covers.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, with LEN the ASCII decimal byte length; the type is
    UTF-8. Lengths make the split unambiguous, so a signature over one (type, body) cannot pass for another.
    """
    try:
        kind = payload_type.encode()
    except UnicodeEncodeError:
        raise MalformedInput("a DSSE payload type must be valid Unicode text") from None
    return b" ".join((DSSE_PREFIX, str(len(kind)).encode(), kind, str(len(payload)).encode(), payload))


def _verify(public_key: bytes, signed: bytes, signature: bytes, what: str) -> None:
    try:
        key = Ed25519PublicKey.from_public_bytes(_key_bytes(public_key, "an Ed25519 public key"))
        key.verify(signature, signed)
    except (_CryptoInvalidSignature, ValueError) as exc:
        raise InvalidSignature(f"signature does not verify for {what}") from exc


def verify_signature(public_key: bytes, domain: str, message: bytes, signature: bytes) -> None:
    """Raise :class:`InvalidSignature` unless ``signature`` is the key's signature of ``message`` in ``domain``."""
    _verify(public_key, _signed_bytes(domain, message), signature, f"domain {domain!r}")


def verify_dsse_signature(public_key: bytes, payload_type: str, payload: bytes, signature: bytes) -> None:
    """Raise :class:`InvalidSignature` unless ``signature`` is the key's DSSE signature of (type, payload)."""
    _verify(public_key, dsse_pae(payload_type, payload), signature, f"DSSE payload type {payload_type!r}")


@dataclass(frozen=True)
class PublicIdentity:
    """What everyone may know of an account: its two public keys and its address."""

    signing_key: bytes
    sealing_key: bytes

    def __post_init__(self) -> None:
        _key_bytes(self.signing_key, "an Ed25519 public key")
        _key_bytes(self.sealing_key, "an X25519 public key")

    @property
    def address(self) -> str:
        return address_of(self.signing_key)

    def verify(self, domain: str, message: bytes, signature: bytes) -> None:
        verify_signature(self.signing_key, domain, message, signature)


class Identity:
    """An account's private keys. Keep it in the keystore; only :attr:`public` leaves the machine."""

    def __init__(self, signing: Ed25519PrivateKey, sealing: X25519PrivateKey) -> None:
        self._signing = signing
        self._sealing = sealing
        self.public = PublicIdentity(
            signing.public_key().public_bytes(_RAW, _RAW_PUB),
            sealing.public_key().public_bytes(_RAW, _RAW_PUB),
        )

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, signing_seed: bytes, sealing_seed: bytes) -> Identity:
        return cls(
            Ed25519PrivateKey.from_private_bytes(_key_bytes(signing_seed, "an Ed25519 private key")),
            X25519PrivateKey.from_private_bytes(_key_bytes(sealing_seed, "an X25519 private key")),
        )

    def private_bytes(self) -> tuple[bytes, bytes]:
        """The two 32-byte private seeds, for the keystore."""
        return (
            self._signing.private_bytes(_RAW, _RAW_PRIV, _NO_ENC),
            self._sealing.private_bytes(_RAW, _RAW_PRIV, _NO_ENC),
        )

    @property
    def address(self) -> str:
        return self.public.address

    @property
    def sealing_private_key(self) -> X25519PrivateKey:
        return self._sealing

    def sign(self, domain: str, message: bytes) -> bytes:
        return self._signing.sign(_signed_bytes(domain, message))

    def sign_dsse(self, payload_type: str, payload: bytes) -> bytes:
        """Sign a DSSE envelope's PAE(type, payload) as the DSSE spec requires, without a Cloister domain.

        Interoperable with any DSSE verifier; it cannot collide with :meth:`sign`, whose bytes never start
        with ``DSSEv1``.
        """
        return self._signing.sign(dsse_pae(payload_type, payload))


def x25519_public(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(_key_bytes(raw, "an X25519 public key"))

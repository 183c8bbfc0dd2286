"""HPKE (RFC 9180) base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-GCM.

Composed from primitives because ``cryptography``'s own HPKE takes no AAD, and key grants bind their AAD.
:func:`seal` / :func:`open_sealed` are the safe single-shot recipe. They are built on the underscored layer
below (explicit ephemeral key, sequence-numbered context), checked by the RFC test vectors; not for callers.
"""

from __future__ import annotations

import hmac
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloister.crypto.identity import x25519_public
from cloister.errors import CryptoError, IntegrityError, MalformedInput

ENC_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
_HASH = "sha256"
_HASH_SIZE = 32
_MODE_BASE = 0x00
_KEM_ID = 0x0020
_KDF_ID = 0x0001
_KEM_SUITE_ID = b"KEM" + _KEM_ID.to_bytes(2, "big")
_VERSION_LABEL = b"HPKE-v1"


class Aead(Enum):
    """The AEADs this module speaks, valued by their RFC 9180 identifier."""

    AES_128_GCM = 0x0001
    AES_256_GCM = 0x0002

    @property
    def key_size(self) -> int:
        return 16 if self is Aead.AES_128_GCM else 32

    @property
    def suite_id(self) -> bytes:
        return b"HPKE" + b"".join(i.to_bytes(2, "big") for i in (_KEM_ID, _KDF_ID, self.value))


def seal(
    recipient_public_key: bytes,
    plaintext: bytes,
    *,
    info: bytes,
    aad: bytes = b"",
    aead: Aead = Aead.AES_256_GCM,
) -> bytes:
    """Encrypt ``plaintext`` to a recipient's X25519 key; returns ``enc (32 bytes) || ciphertext``."""
    context, enc = _setup_sender(aead, recipient_public_key, info, X25519PrivateKey.generate())
    return enc + context.seal(aad, plaintext)


def open_sealed(
    recipient_private_key: X25519PrivateKey,
    sealed: bytes,
    *,
    info: bytes,
    aad: bytes = b"",
    aead: Aead = Aead.AES_256_GCM,
) -> bytes:
    """Decrypt what :func:`seal` produced; any failure to authenticate raises :class:`IntegrityError`."""
    if len(sealed) < ENC_SIZE + TAG_SIZE:
        raise MalformedInput(
            f"an HPKE sealed message is at least {ENC_SIZE + TAG_SIZE} bytes, got {len(sealed)}; "
            "it was truncated — fetch it again"
        )
    context = _setup_receiver(aead, sealed[:ENC_SIZE], recipient_private_key, info)
    return context.open(aad, sealed[ENC_SIZE:])


# --- hazmat: the RFC 9180 building blocks -------------------------------------------------------------------


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    # HMAC pads an empty key with zeros, which is exactly HKDF-Extract's default salt.
    return hmac.digest(salt, _VERSION_LABEL + suite_id + label + ikm, _HASH)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled_info = length.to_bytes(2, "big") + _VERSION_LABEL + suite_id + label + info
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.digest(prk, block + labeled_info + bytes([counter]), _HASH)
        okm += block
        counter += 1
    return okm[:length]


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _shared_secret(dh: bytes, enc: bytes, recipient_public: bytes) -> bytes:
    eae_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"eae_prk", dh)
    return _labeled_expand(_KEM_SUITE_ID, eae_prk, b"shared_secret", enc + recipient_public, _HASH_SIZE)


def _encap(recipient_public_key: bytes, ephemeral: X25519PrivateKey) -> tuple[bytes, bytes]:
    """DHKEM Encap with a given ephemeral key: returns ``(shared_secret, enc)``."""
    try:
        dh = ephemeral.exchange(x25519_public(recipient_public_key))
    except ValueError:
        raise MalformedInput(
            "the recipient's X25519 public key is a low-order point; ask the recipient for its real sealing key"
        ) from None
    enc = _public_bytes(ephemeral)
    return _shared_secret(dh, enc, recipient_public_key), enc


def _decap(enc: bytes, recipient: X25519PrivateKey) -> bytes:
    try:
        dh = recipient.exchange(X25519PublicKey.from_public_bytes(enc))
    except ValueError:
        raise IntegrityError(
            "the sealed message's encapsulated key is invalid; it was tampered with — ask the sender to seal again"
        ) from None
    return _shared_secret(dh, enc, _public_bytes(recipient))


def _key_schedule_context(aead: Aead, info: bytes) -> bytes:
    suite_id = aead.suite_id
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", info)
    return bytes([_MODE_BASE]) + psk_id_hash + info_hash


class _Context:
    """An HPKE encryption context: one AEAD key whose nonce is ``base_nonce XOR sequence number``."""

    def __init__(self, aead: Aead, shared_secret: bytes, info: bytes) -> None:
        suite_id = aead.suite_id
        context = _key_schedule_context(aead, info)
        secret = _labeled_extract(suite_id, shared_secret, b"secret", b"")
        self.key = _labeled_expand(suite_id, secret, b"key", context, aead.key_size)
        self.base_nonce = _labeled_expand(suite_id, secret, b"base_nonce", context, NONCE_SIZE)
        self.exporter_secret = _labeled_expand(suite_id, secret, b"exp", context, _HASH_SIZE)
        self._aead = AESGCM(self.key)
        self._seq = 0

    def _nonce(self) -> bytes:
        if self._seq >= (1 << (8 * NONCE_SIZE)) - 1:
            raise CryptoError("this HPKE context has used its last nonce; set up a new one")
        return (int.from_bytes(self.base_nonce, "big") ^ self._seq).to_bytes(NONCE_SIZE, "big")

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        ciphertext = self._aead.encrypt(self._nonce(), plaintext, aad)
        self._seq += 1
        return ciphertext

    def open(self, aad: bytes, ciphertext: bytes) -> bytes:
        try:
            plaintext = self._aead.decrypt(self._nonce(), ciphertext, aad)
        except InvalidTag:
            raise IntegrityError(
                "the sealed message does not authenticate: it was tampered with, or it was sealed to another "
                "key or with another info or AAD; ask the sender to seal it again for this key and purpose"
            ) from None
        self._seq += 1
        return plaintext


def _setup_sender(
    aead: Aead, recipient_public_key: bytes, info: bytes, ephemeral: X25519PrivateKey
) -> tuple[_Context, bytes]:
    shared_secret, enc = _encap(recipient_public_key, ephemeral)
    return _Context(aead, shared_secret, info), enc


def _setup_receiver(aead: Aead, enc: bytes, recipient: X25519PrivateKey, info: bytes) -> _Context:
    return _Context(aead, _decap(enc, recipient), info)

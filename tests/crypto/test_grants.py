"""Key grants open only for the order, content, machine and engine (and loader key) they were made for."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.crypto.grants import GRANT_INFO, open_key_grant, seal_key_grant
from cloister.crypto.hpke import seal
from cloister.crypto.stream import generate_key
from cloister.errors import IntegrityError, MalformedInput

BINDING = {
    "order_id": "order-1",
    "content_digest": digest_bytes(b"model weights"),
    "machine_id": "machine-a",
    "engine_digest": digest_bytes(b"lora engine bundle"),
}


@pytest.fixture
def loader_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def _grant(dek: bytes, loader_key: X25519PrivateKey) -> bytes:
    return seal_key_grant(dek, loader_key.public_key().public_bytes_raw(), **BINDING)


def test_grant_round_trip(loader_key: X25519PrivateKey) -> None:
    dek = generate_key()
    assert open_key_grant(_grant(dek, loader_key), loader_key, **BINDING) == dek


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("order_id", "order-2"),
        ("content_digest", digest_bytes(b"other weights")),
        ("machine_id", "machine-b"),
        ("engine_digest", digest_bytes(b"an engine the owner never allowed")),
    ],
)
def test_grant_does_not_open_for_another_binding(loader_key: X25519PrivateKey, field: str, other: str) -> None:
    sealed = _grant(generate_key(), loader_key)
    with pytest.raises(IntegrityError, match="grant again") as raised:
        open_key_grant(sealed, loader_key, **{**BINDING, field: other})
    assert raised.value.details[field] == other


def test_grant_does_not_open_with_another_loader_key(loader_key: X25519PrivateKey) -> None:
    sealed = _grant(generate_key(), loader_key)
    with pytest.raises(IntegrityError):
        open_key_grant(sealed, X25519PrivateKey.generate(), **BINDING)


def test_tampered_grant_fails(loader_key: X25519PrivateKey) -> None:
    sealed = bytearray(_grant(generate_key(), loader_key))
    sealed[-5] ^= 0x80
    with pytest.raises(IntegrityError):
        open_key_grant(bytes(sealed), loader_key, **BINDING)


def test_truncated_grant_is_malformed(loader_key: X25519PrivateKey) -> None:
    with pytest.raises(MalformedInput):
        open_key_grant(_grant(generate_key(), loader_key)[:40], loader_key, **BINDING)


def test_binding_fields_cannot_be_shifted_between_each_other(loader_key: X25519PrivateKey) -> None:
    """A separator-based AAD could confuse ``a|b`` with ``a|`` + ``b``; the canonical JSON binding cannot."""
    sealed = seal_key_grant(
        generate_key(),
        loader_key.public_key().public_bytes_raw(),
        order_id="order|1",
        content_digest=BINDING["content_digest"],
        machine_id="m",
        engine_digest=BINDING["engine_digest"],
    )
    shifted = {**BINDING, "order_id": "order", "machine_id": "1|m"}
    with pytest.raises(IntegrityError):
        open_key_grant(sealed, loader_key, **shifted)


@pytest.mark.parametrize("dek", [b"", bytes(16), bytes(33)])
def test_only_32_byte_deks_are_granted(loader_key: X25519PrivateKey, dek: bytes) -> None:
    with pytest.raises(MalformedInput, match="32 bytes"):
        _grant(dek, loader_key)


@pytest.mark.parametrize(
    "override",
    [
        {"content_digest": "sha256:xyz"},
        {"content_digest": "md5:00"},
        {"order_id": ""},
        {"machine_id": ""},
        {"engine_digest": "not-a-digest"},
    ],
)
def test_malformed_binding_is_refused(loader_key: X25519PrivateKey, override: dict[str, str]) -> None:
    with pytest.raises(MalformedInput):
        seal_key_grant(generate_key(), loader_key.public_key().public_bytes_raw(), **{**BINDING, **override})


def test_authentic_grant_that_is_not_a_dek_is_refused(loader_key: X25519PrivateKey) -> None:
    """A keeper bug that seals something other than a 32-byte DEK must not hand the loader a bad key."""
    sealed = seal(
        loader_key.public_key().public_bytes_raw(), b"not a key", info=GRANT_INFO, aad=canonical_json(BINDING)
    )
    with pytest.raises(IntegrityError, match="not a 32-byte DEK"):
        open_key_grant(sealed, loader_key, **BINDING)

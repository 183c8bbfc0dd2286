"""Digests, canonical JSON and identities: the primitives every signed or hashed thing rests on."""

from __future__ import annotations

import io

import pytest

from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import digest_bytes, digest_file, format_digest, is_digest, parse_digest
from cloister.crypto.identity import Identity, PublicIdentity, address_of, is_address, verify_signature
from cloister.errors import InvalidSignature, MalformedInput


def test_digest_forms() -> None:
    empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert digest_bytes(b"") == empty
    assert digest_file(io.BytesIO(b"")) == empty
    assert digest_file(io.BytesIO(b"x" * 3_000_000)) == digest_bytes(b"x" * 3_000_000)
    assert format_digest(parse_digest(empty)) == empty
    assert is_digest(empty) and not is_digest(empty.upper()) and not is_digest(None)


@pytest.mark.parametrize(
    "bad", ["", "sha256:", "sha256:abc", "SHA256:" + "0" * 64, "sha256:" + "0" * 63 + "g", "md5:" + "0" * 64]
)
def test_malformed_digests_are_refused(bad: str) -> None:
    with pytest.raises(MalformedInput, match="not a digest"):
        parse_digest(bad)
    with pytest.raises(MalformedInput):
        format_digest(b"short")


def test_canonical_json_is_unique() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})
    for bad in ({"x": 1.5}, {1: "int key"}, {"x": float("nan")}, {"x": b"bytes"}):
        with pytest.raises(MalformedInput):
            canonical_json(bad)
    with pytest.raises(MalformedInput, match="not valid JSON"):
        loads(b"{truncated")
    with pytest.raises(MalformedInput):
        loads(b"\xff\xfe")


def test_signatures_are_bound_to_key_domain_and_message() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    signature = alice.sign("cloister/test/v1", b"message")
    alice.public.verify("cloister/test/v1", b"message", signature)
    with pytest.raises(InvalidSignature):
        bob.public.verify("cloister/test/v1", b"message", signature)
    with pytest.raises(InvalidSignature):
        alice.public.verify("cloister/other/v1", b"message", signature)
    with pytest.raises(InvalidSignature):
        alice.public.verify("cloister/test/v1", b"messagE", signature)
    with pytest.raises(InvalidSignature):
        verify_signature(alice.public.signing_key, "cloister/test/v1", b"message", signature[:-1])
    with pytest.raises(MalformedInput):
        alice.sign("bad\x00domain", b"m")


def test_identity_round_trip_and_addresses() -> None:
    alice = Identity.generate()
    again = Identity.from_private_bytes(*alice.private_bytes())
    assert again.public == alice.public and again.address == alice.address
    assert is_address(alice.address) and alice.address == address_of(alice.public.signing_key)
    assert not is_address(alice.address.upper()) and not is_address("cl1234") and not is_address(7)
    with pytest.raises(MalformedInput):
        PublicIdentity(b"short", alice.public.sealing_key)
    with pytest.raises(MalformedInput):
        Identity.from_private_bytes(b"x" * 31, b"y" * 32)

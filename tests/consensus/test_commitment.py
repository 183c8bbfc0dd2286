"""Signed commitments and endpoint statements: round trips, and every tampering caught."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from tests.consensus.samples import ORDER, REPLICAS

from cloister.consensus.commitment import (
    Commitment,
    SignedCommitment,
    content_digest,
    deployment_digest,
    output_digest,
)
from cloister.consensus.endpoint import endpoint_statement, sign_endpoint, verify_endpoint
from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.errors import InvalidSignature, MalformedInput

ALICE, BOB = REPLICAS["mc-0000000000000000"], REPLICAS["mc-0000000000000001"]


def test_round_trips() -> None:
    signed = ALICE.commit()
    assert SignedCommitment.parse(signed.to_bytes()) == signed
    assert SignedCommitment.from_json(json.loads(signed.to_bytes())) == signed
    assert signed.verify(ALICE.loader.public.signing_key) == signed.commitment
    assert signed.to_json()["signature"] == base64.b64encode(signed.signature).decode()


def test_another_machines_key_does_not_verify() -> None:
    with pytest.raises(InvalidSignature, match="mc-0000000000000000"):
        ALICE.commit().verify(BOB.loader.public.signing_key)


def test_every_byte_flip_fails_to_parse_or_to_verify() -> None:
    data = ALICE.commit().to_bytes()
    key = ALICE.loader.public.signing_key
    for index in range(len(data)):
        for flip in (0x01, 0x20):
            tampered = data[:index] + bytes([data[index] ^ flip]) + data[index + 1 :]
            with pytest.raises((MalformedInput, InvalidSignature)):
                SignedCommitment.parse(tampered).verify(key)


def test_every_truncation_fails() -> None:
    data = ALICE.commit().to_bytes()
    for size in range(len(data)):
        with pytest.raises(MalformedInput):
            SignedCommitment.parse(data[:size])


def test_other_spellings_of_the_same_commitment_are_refused() -> None:
    signed = ALICE.commit()
    spaced = json.dumps(signed.to_json()).encode()
    with pytest.raises(MalformedInput, match="canonical"):
        SignedCommitment.parse(spaced)
    # base64 whose unused low bits differ decodes to the same signature: only one spelling is accepted
    text = signed.to_json()["signature"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sloppy = text[:-3] + alphabet[alphabet.index(text[-3]) ^ 1] + "=="
    assert base64.b64decode(sloppy) == signed.signature
    with pytest.raises(MalformedInput, match="canonical base64"):
        SignedCommitment.from_json({**signed.to_json(), "signature": sloppy})
    with pytest.raises(MalformedInput, match="at most"):
        SignedCommitment.parse(b" " * 5000)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deployment_id", ""),
        ("machine_id", "mc/../x"),
        ("request_digest", "sha256:" + "AB" * 32),
        ("output_digest", "md5:00"),
        ("completion_tokens", -1),
        ("prompt_tokens", True),
        ("created_at", 1.5),
        ("role", "leader"),
    ],
)
def test_ill_formed_fields_are_refused(field: str, value: object) -> None:
    commitment = ALICE.commit().commitment
    with pytest.raises(MalformedInput):
        dataclasses.replace(commitment, **{field: value})
    with pytest.raises(MalformedInput):
        Commitment.from_json({**commitment.to_json(), field: value})


def test_wrong_shapes_are_refused() -> None:
    body = ALICE.commit().to_json()
    for broken in (
        {**body, "extra": 1},
        {"commitment": body["commitment"]},
        {**body, "commitment": {**body["commitment"], "note": "x"}},
        {**body, "signature": base64.b64encode(b"x" * 63).decode()},
        {**body, "signature": "not base64!"},
        [body],
    ):
        with pytest.raises(MalformedInput):
            SignedCommitment.from_json(broken)


def test_deployment_digest_names_everything_served() -> None:
    model, engine = "sha256:" + "11" * 32, "sha256:" + "33" * 32
    a, b = "sha256:" + "aa" * 32, "sha256:" + "bb" * 32
    base = deployment_digest(ORDER, model, [a, b], engine)
    assert base == digest_bytes(
        canonical_json({"order_id": ORDER, "model": model, "adapters": [a, b], "engine": engine})
    )
    assert base != deployment_digest(ORDER, model, [b, a], engine)  # adapter stacking order matters
    assert base != deployment_digest("or-other", model, [a, b], engine)
    assert base != deployment_digest(ORDER, model, [a, b], model)
    with pytest.raises(MalformedInput):
        deployment_digest(ORDER, model, ["not a digest"], engine)


def test_output_and_content_digests() -> None:
    assert output_digest([1, 2, 3]) == digest_bytes(b"[1,2,3]")
    assert output_digest((1, 2, 3)) == output_digest([1, 2, 3]) != output_digest([1, 2, 4])
    assert output_digest([]) == digest_bytes(b"[]")
    for bad in ([-1], [True], [1.0], ["1"], [1 << 32]):
        with pytest.raises(MalformedInput):
            output_digest(bad)  # type: ignore[arg-type]
    assert content_digest("héllo") == digest_bytes("héllo".encode())
    with pytest.raises(MalformedInput):
        content_digest("\ud800")


# --- endpoint statements -------------------------------------------------------------------------------------

URL, KEY = "http://127.0.0.1:8123", bytes(range(32))


def test_endpoint_statement_round_trip_and_tampering() -> None:
    signature = sign_endpoint(ALICE.loader, ORDER, ALICE.machine_id, URL, KEY)
    loader_key = ALICE.loader.public.signing_key
    verify_endpoint(loader_key, ORDER, ALICE.machine_id, URL, KEY, signature)
    assert json.loads(endpoint_statement(ORDER, ALICE.machine_id, URL, KEY)) == {
        "order_id": ORDER,
        "machine_id": ALICE.machine_id,
        "url": URL,
        "deployment_key": KEY.hex(),
    }
    for changed in (
        ("or-other", ALICE.machine_id, URL, KEY),
        (ORDER, BOB.machine_id, URL, KEY),
        (ORDER, ALICE.machine_id, "http://127.0.0.1:9999", KEY),
        (ORDER, ALICE.machine_id, URL, bytes(32)),
    ):
        with pytest.raises(InvalidSignature):
            verify_endpoint(loader_key, *changed, signature)
    with pytest.raises(InvalidSignature):
        verify_endpoint(BOB.loader.public.signing_key, ORDER, ALICE.machine_id, URL, KEY, signature)


def test_endpoint_signature_is_not_a_commitment_signature() -> None:
    """Domain separation: a loader signature for one purpose never verifies for another."""
    signed = ALICE.commit()
    statement_signature = sign_endpoint(ALICE.loader, ORDER, ALICE.machine_id, URL, KEY)
    with pytest.raises(InvalidSignature):
        dataclasses.replace(signed, signature=statement_signature).verify(ALICE.loader.public.signing_key)


@pytest.mark.parametrize(
    ("url", "key"),
    [("ftp://x", KEY), ("127.0.0.1:80", KEY), ("http://", KEY), ("http://a b", KEY), (URL, KEY[:31]), (URL, "k")],
)
def test_bad_endpoints_are_refused(url: str, key: bytes) -> None:
    with pytest.raises(MalformedInput):
        endpoint_statement(ORDER, ALICE.machine_id, url, key)

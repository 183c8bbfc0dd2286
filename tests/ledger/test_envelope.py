"""The signed transaction envelope: what is signed, and every way to forge or mangle it."""

from __future__ import annotations

from typing import Any

import pytest

from cloister.crypto.identity import Identity
from cloister.errors import InvalidTransaction, SignatureRejected
from cloister.ledger.envelope import SignedTransaction, Transaction


def signed_by(identity: Identity, **changes: Any) -> SignedTransaction:
    fields: dict[str, Any] = {
        "type": "transfer",
        "payload": {"to": identity.address, "amount": 1},
        "sender": identity.address,
        "nonce": 1,
        "chain_id": "cloister-test",
    }
    fields.update(changes)
    return SignedTransaction.sign(identity, Transaction(**fields))


def test_round_trip_and_hash() -> None:
    alice = Identity.generate()
    signed = signed_by(alice)
    signed.verify()
    again = SignedTransaction.from_json(signed.to_json())
    again.verify()
    assert again == signed and again.hash == signed.hash and again.hash.startswith("sha256:")


def test_any_change_breaks_the_signature() -> None:
    alice = Identity.generate()
    body = signed_by(alice).to_json()
    for field, value in (
        ("nonce", 2),
        ("chain_id", "other"),
        ("payload", {"to": alice.address, "amount": 2}),
    ):
        tampered = {**body, "tx": {**body["tx"], field: value}}
        with pytest.raises(SignatureRejected):
            SignedTransaction.from_json(tampered).verify()


def test_a_key_that_is_not_the_senders_is_rejected() -> None:
    alice, mallory = Identity.generate(), Identity.generate()
    forged = signed_by(mallory, sender=mallory.address).to_json()
    forged["tx"]["sender"] = alice.address
    with pytest.raises(SignatureRejected, match="does not belong"):
        SignedTransaction.from_json(forged).verify()
    with pytest.raises(InvalidTransaction):
        SignedTransaction.sign(mallory, Transaction("transfer", {}, alice.address, 1, "c"))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: [],
        lambda b: {**b, "extra": 1},
        lambda b: {k: v for k, v in b.items() if k != "signature"},
        lambda b: {**b, "signature": "zz"},
        lambda b: {**b, "tx": {**b["tx"], "nonce": 0}},
        lambda b: {**b, "tx": {**b["tx"], "nonce": True}},
        lambda b: {**b, "tx": {**b["tx"], "sender": "not-an-address"}},
        lambda b: {**b, "tx": {**b["tx"], "type": ""}},
        lambda b: {**b, "tx": {**b["tx"], "payload": []}},
        lambda b: {**b, "tx": {**b["tx"], "chain_id": ""}},
    ],
)
def test_malformed_envelopes_are_typed_errors(mangle: Any) -> None:
    body = signed_by(Identity.generate()).to_json()
    with pytest.raises((InvalidTransaction, SignatureRejected)):
        SignedTransaction.from_json(mangle(body))


def test_truncated_signature_is_rejected() -> None:
    body = signed_by(Identity.generate()).to_json()
    body["signature"] = body["signature"][:-2]
    with pytest.raises(SignatureRejected):
        SignedTransaction.from_json(body)

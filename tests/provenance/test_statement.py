"""The provenance manifest: in-toto Statement v1 in DSSE, signed by the loader; forgeries fail a named check."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from tests.provenance import samples
from tests.provenance.samples import ADAPTER, ORDER

from cloister.attest.checks import Checklist
from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity
from cloister.errors import BindingMismatch, CloisterError, DigestMismatch, InvalidSignature, MalformedInput
from cloister.provenance.dsse import Envelope, sign_envelope
from cloister.provenance.fields import ContentRef
from cloister.provenance.statement import (
    FINETUNE_PREDICATE,
    PAYLOAD_TYPE,
    STATEMENT_TYPE,
    Metrics,
    Subject,
    build_manifest,
    manifest_digest,
    statement_json,
    verify_manifest,
)


@pytest.fixture
def loader() -> Identity:
    return Identity.generate()


@pytest.fixture
def envelope(loader: Identity) -> Envelope:
    return build_manifest([ADAPTER], samples.predicate(loader), loader)


def checks(checklist: Checklist) -> list[tuple[str, bool]]:
    return [(item.name, item.passed) for item in checklist.items]


def refused(
    error_type: type[CloisterError], data: bytes | str, loader: Identity, check: str, **expect: Any
) -> CloisterError:
    """Verify ``data``, expect ``error_type`` naming ``check``, and the checklist to end with that failure."""
    checklist = Checklist()
    with pytest.raises(error_type) as error:
        verify_manifest(data, loader_public_key=loader.public.signing_key, checklist=checklist, **expect)
    assert error.value.details["check"] == check
    assert checklist.items[-1].name == check and not checklist.items[-1].passed
    assert all(item.passed for item in checklist.items[:-1])
    return error.value


def resigned(loader: Identity, statement: Any, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """A statement the genuine loader key signed: what a buggy or confused signer could publish."""
    return sign_envelope(payload_type, canonical_json(statement), loader).to_bytes()


def good_statement(loader: Identity) -> dict[str, Any]:
    return statement_json([ADAPTER], samples.predicate(loader))


# --- the good path -------------------------------------------------------------------------------------------


def test_round_trip(loader: Identity, envelope: Envelope) -> None:
    checklist = Checklist()
    wire = envelope.to_bytes()
    manifest = verify_manifest(
        wire,
        loader_public_key=loader.public.signing_key,
        expected_subject_digest=ADAPTER.digest,
        expected_order_id=ORDER,
        expected_digest=manifest_digest(envelope),
        checklist=checklist,
    )
    assert manifest.subjects == (ADAPTER,)
    assert manifest.predicate == samples.predicate(loader)
    assert manifest.digest == manifest_digest(envelope) == manifest_digest(wire) == digest_bytes(wire)
    assert checks(checklist) == [
        ("envelope", True),
        ("signature", True),
        ("payload type", True),
        ("statement", True),
        ("loader key", True),
        ("order", True),
        ("subject digest", True),
        ("ledger digest", True),
    ]


def test_statement_is_in_toto_v1(loader: Identity, envelope: Envelope) -> None:
    assert envelope.payload_type == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    statement = json.loads(envelope.payload)
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == FINETUNE_PREDICATE
    assert statement["subject"] == [{"name": "adapter", "digest": {"sha256": ADAPTER.digest.removeprefix("sha256:")}}]
    predicate = statement["predicate"]
    assert predicate["loader_key"] == loader.public.signing_key.hex()
    assert predicate["metrics"]["eval_after"] == "0.75"
    assert predicate["datasets"] == [samples.CLINIC.to_json(), samples.LAB.to_json()]


def test_the_digest_does_not_depend_on_how_the_envelope_is_spelled(loader: Identity, envelope: Envelope) -> None:
    data = json.loads(envelope.to_bytes())
    data["signatures"][0]["sig"] = data["signatures"][0]["sig"].replace("+", "-").replace("/", "_")
    respelled = json.dumps(data, indent=2)
    assert manifest_digest(respelled) == manifest_digest(envelope)
    assert verify_manifest(respelled, loader_public_key=loader.public.signing_key).digest == manifest_digest(envelope)


# --- forgeries and mix-ups ----------------------------------------------------------------------------------


def test_manifest_signed_by_another_key(loader: Identity) -> None:
    forger = Identity.generate()
    forged = build_manifest([ADAPTER], samples.predicate(forger), forger)
    refused(InvalidSignature, forged.to_bytes(), loader, "signature")
    # Naming the genuine loader in the predicate does not help the forger either.
    claimed = sign_envelope(PAYLOAD_TYPE, canonical_json(good_statement(loader)), forger)
    refused(InvalidSignature, claimed.to_bytes(), loader, "signature")


def test_statement_edited_after_signing(loader: Identity, envelope: Envelope) -> None:
    statement = json.loads(envelope.payload)
    statement["predicate"]["metrics"]["eval_after"] = "0.99"
    edited = Envelope(envelope.payload_type, canonical_json(statement), envelope.signatures)
    refused(InvalidSignature, edited.to_bytes(), loader, "signature")


def test_predicate_naming_another_loader(loader: Identity) -> None:
    other = Identity.generate()
    wire = resigned(loader, statement_json([ADAPTER], samples.predicate(other)))
    refused(BindingMismatch, wire, loader, "loader key")
    with pytest.raises(MalformedInput, match="put the signing loader's public key"):
        build_manifest([ADAPTER], samples.predicate(other), loader)


def test_manifest_for_another_adapter(loader: Identity, envelope: Envelope) -> None:
    error = refused(
        DigestMismatch, envelope.to_bytes(), loader, "subject digest", expected_subject_digest=digest_bytes(b"mine")
    )
    assert "describes another artifact" in error.message


def test_manifest_replayed_for_another_order(loader: Identity, envelope: Envelope) -> None:
    refused(BindingMismatch, envelope.to_bytes(), loader, "order", expected_order_id="or-aaaaaaaaaaaaaaaa")


def test_manifest_not_the_one_on_the_ledger(loader: Identity, envelope: Envelope) -> None:
    refused(DigestMismatch, envelope.to_bytes(), loader, "ledger digest", expected_digest=digest_bytes(b"other"))


def test_wrong_payload_type(loader: Identity) -> None:
    refused(MalformedInput, resigned(loader, good_statement(loader), "application/json"), loader, "payload type")


def test_malformed_or_truncated_envelope_text(loader: Identity, envelope: Envelope) -> None:
    wire = envelope.to_bytes()
    for data in (wire[: len(wire) // 2], wire[:-1], b"", b"null", b"{}", "[]", wire + b"x"):
        refused(MalformedInput, data, loader, "envelope")


def _bad_statements(loader: Identity) -> dict[str, tuple[Any, str]]:
    """Name → (statement the loader signed, what the refusal must mention)."""
    good = good_statement(loader)
    pred = good["predicate"]
    subject = good["subject"][0]
    return {
        "not an object": ([good], "must be a JSON object"),
        "wrong _type": (
            {**good, "_type": "https://in-toto.io/Statement/v0.1"},
            "expected https://in-toto.io/Statement/v1",
        ),
        "wrong predicateType": (
            {**good, "predicateType": "https://slsa.dev/provenance/v1"},
            "expected https://cloister.dev",
        ),
        "extra statement field": ({**good, "extra": True}, "unknown extra"),
        "no subject": ({**good, "subject": []}, "1 to 16"),
        "subject with extra field": ({**good, "subject": [{**subject, "uri": "file:///x"}]}, "unknown uri"),
        "subject digest not sha256": (
            {**good, "subject": [{**subject, "digest": {"sha512": "00" * 64}}]},
            "missing sha256",
        ),
        "subject digest short": ({**good, "subject": [{**subject, "digest": {"sha256": "abcd"}}]}, "must be a digest"),
        "subject digest upper case": (
            {
                **good,
                "subject": [{**subject, "digest": {"sha256": subject["digest"]["sha256"].upper()}}],
            },
            "must be a digest",
        ),
        "predicate extra field": ({**good, "predicate": {**pred, "note": "x"}}, "unknown note"),
        "predicate missing field": (
            {**good, "predicate": {k: v for k, v in pred.items() if k != "tcb_id"}},
            "missing tcb_id",
        ),
        "metric not a decimal string": (
            {**good, "predicate": {**pred, "metrics": {**pred["metrics"], "eval_after": 1}}},
            "eval_after must be a decimal",
        ),
        "metric in exponent form": (
            {
                **good,
                "predicate": {**pred, "metrics": {**pred["metrics"], "final_loss": "4e-1"}},
            },
            "final_loss must be a decimal",
        ),
        "bad loader key hex": ({**good, "predicate": {**pred, "loader_key": "zz" * 32}}, "loader_key must be 32 bytes"),
        "no datasets": ({**good, "predicate": {**pred, "datasets": []}}, "datasets must hold 1 to 64"),
        "dataset twice": ({**good, "predicate": {**pred, "datasets": [pred["datasets"][0]] * 2}}, "same offer twice"),
        "bad base model digest": (
            {**good, "predicate": {**pred, "base_model": {"offer_id": "of-1", "digest": "x"}}},
            "must be a digest",
        ),
        "negative time": ({**good, "predicate": {**pred, "started_at": -1}}, "started_at must be an integer"),
        "boolean time": ({**good, "predicate": {**pred, "ended_at": True}}, "ended_at must be an integer"),
        "ends before it starts": ({**good, "predicate": {**pred, "ended_at": pred["started_at"] - 1}}, "cannot end"),
        "hyperparameters not an object": (
            {**good, "predicate": {**pred, "hyperparameters": [1]}},
            "hyperparameters must be",
        ),
        "order id with spaces": ({**good, "predicate": {**pred, "order_id": "or 1"}}, "order id must be an id"),
    }


@pytest.mark.parametrize("name", list(_bad_statements(Identity.generate())))
def test_malformed_statements_signed_by_the_loader_fail_the_statement_check(loader: Identity, name: str) -> None:
    statement, fragment = _bad_statements(loader)[name]
    error = refused(MalformedInput, resigned(loader, statement), loader, "statement")
    assert fragment in error.message


def test_statement_payload_that_is_not_json(loader: Identity) -> None:
    for payload in (b"", b"{", b'{"_type": 1, "_type": 2}', b"[" * 5000, b"\xff"):
        wire = sign_envelope(PAYLOAD_TYPE, payload, loader).to_bytes()
        refused(MalformedInput, wire, loader, "statement")


def test_floats_in_hyperparameters_are_refused_when_building(loader: Identity) -> None:
    with pytest.raises(MalformedInput, match="no floats"):
        samples.predicate(loader, hyperparameters={"learning_rate": 2e-4})


@pytest.mark.parametrize(
    "changes",
    [
        {"ended_at": samples.STARTED - 1},
        {"datasets": ()},
        {"datasets": (samples.CLINIC, samples.CLINIC)},
        {"tcb_id": "sha256:short"},
        {"loader_key": b"short"},
        {"order_id": ""},
        {"engine": "of-4444444444444444"},
    ],
)
def test_inconsistent_predicates_cannot_be_built(loader: Identity, changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedInput):
        samples.predicate(loader, **changes)


def test_metric_and_subject_values_are_checked() -> None:
    with pytest.raises(MalformedInput, match="finite Decimal"):
        Metrics(Decimal("NaN"), "loss", Decimal(0), Decimal(0))
    with pytest.raises(MalformedInput, match="finite Decimal"):
        Metrics(0.5, "loss", Decimal(0), Decimal(0))  # type: ignore[arg-type]
    with pytest.raises(MalformedInput):
        Subject("", ADAPTER.digest)
    with pytest.raises(MalformedInput):
        ContentRef("of-1", "sha256:" + "0" * 63)
    with pytest.raises(MalformedInput, match="1 to 16"):
        statement_json([], samples.predicate(Identity.generate()))


def test_decimals_round_trip_exactly(loader: Identity) -> None:
    metrics = Metrics(Decimal("-0.000001"), "loss", Decimal("12345678901234567890.5"), Decimal("1E+2"))
    envelope = build_manifest([ADAPTER], samples.predicate(loader, metrics=metrics), loader)
    manifest = verify_manifest(envelope.to_bytes(), loader_public_key=loader.public.signing_key)
    assert manifest.predicate.metrics == metrics
    assert json.loads(envelope.payload)["predicate"]["metrics"]["eval_after"] == "100"

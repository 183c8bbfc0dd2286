"""The provenance manifest: an in-toto Statement v1 about a fine-tuned adapter, in a DSSE envelope.

The subject is the adapter (its plaintext digest); the predicate, of type :data:`FINETUNE_PREDICATE`, names what
produced it: base model, datasets and engine (offer ids and digests), hyper-parameters, metrics, the order, the
machine and its TCB, the loader key and the run's start and end. The loader signs it with its attested key; the
manifest digest (:func:`manifest_digest`) is what goes on the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from decimal import Decimal
from typing import Any

from cloister.attest.checks import Checklist
from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import PREFIX as DIGEST_PREFIX
from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity, address_of
from cloister.errors import BindingMismatch, DigestMismatch, MalformedInput
from cloister.provenance.dsse import MAX_ENVELOPE, Envelope, sign_envelope, verify_envelope
from cloister.provenance.fields import (
    ContentRef,
    check_binding,
    check_count,
    check_decimal,
    check_digest,
    check_id,
    check_items,
    check_key,
    check_ledger_digest,
    check_params,
    check_refs,
    check_text,
    decimal_from_json,
    decimal_to_json,
    hex_from_json,
    json_list,
    json_object,
    malformed,
    parse_json,
)

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
FINETUNE_PREDICATE = "https://cloister.dev/provenance/finetune/v1"
"""Cloister's predicate type for a fine-tuning run; its fields are documented in ``docs/provenance.md``."""
MAX_SUBJECTS = 16
STATEMENT_FIELDS = ("_type", "subject", "predicateType", "predicate")


@dataclass(frozen=True)
class Subject:
    """What the statement is about: an artifact name and its plaintext digest (``sha256:<hex>``)."""

    name: str
    digest: str

    def __post_init__(self) -> None:
        check_text(self.name, "a subject name")
        check_digest(self.digest, f"the digest of subject {self.name!r}")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": {"sha256": self.digest[len(DIGEST_PREFIX) :]}}

    @classmethod
    def from_json(cls, data: object, what: str) -> Subject:
        fields = json_object(data, what, ("name", "digest"))
        digests = json_object(fields["digest"], f"{what}.digest", ("sha256",))
        if not isinstance(digests["sha256"], str):
            malformed(f"{what}.digest.sha256 must be 64 lower-case hex digits")
        return cls(fields["name"], DIGEST_PREFIX + digests["sha256"])


@dataclass(frozen=True)
class Metrics:
    """Training and evaluation figures, as exact decimals (canonical JSON has no floats).

    ``eval_metric`` names what ``eval_before`` and ``eval_after`` measure on the order's held-out prompts.
    """

    final_loss: Decimal
    eval_metric: str
    eval_before: Decimal
    eval_after: Decimal

    def __post_init__(self) -> None:
        check_decimal(self.final_loss, "metrics.final_loss")
        check_text(self.eval_metric, "metrics.eval_metric")
        check_decimal(self.eval_before, "metrics.eval_before")
        check_decimal(self.eval_after, "metrics.eval_after")

    def to_json(self) -> dict[str, Any]:
        return {
            "final_loss": decimal_to_json(self.final_loss),
            "eval_metric": self.eval_metric,
            "eval_before": decimal_to_json(self.eval_before),
            "eval_after": decimal_to_json(self.eval_after),
        }

    @classmethod
    def from_json(cls, data: object) -> Metrics:
        f = json_object(data, "metrics", ("final_loss", "eval_metric", "eval_before", "eval_after"))
        return cls(
            decimal_from_json(f["final_loss"], "metrics.final_loss"),
            f["eval_metric"],
            decimal_from_json(f["eval_before"], "metrics.eval_before"),
            decimal_from_json(f["eval_after"], "metrics.eval_after"),
        )


@dataclass(frozen=True)
class FinetunePredicate:
    """What produced the adapter. Times are Unix seconds; ``tcb_id`` is the digest of the machine's TCB."""

    order_id: str
    machine_id: str
    tcb_id: str
    loader_key: bytes
    base_model: ContentRef
    datasets: tuple[ContentRef, ...]
    engine: ContentRef
    hyperparameters: dict[str, Any]
    metrics: Metrics
    started_at: int
    ended_at: int

    def __post_init__(self) -> None:
        check_id(self.order_id, "order id")
        check_id(self.machine_id, "machine id")
        check_digest(self.tcb_id, "TCB id")
        check_key(self.loader_key, "loader key")
        check_items((self.base_model, self.engine), "base model and engine", ContentRef)
        check_refs(self.datasets, "datasets")
        check_params(self.hyperparameters, "hyperparameters")
        check_items((self.metrics,), "metrics", Metrics)
        check_count(self.started_at, "started_at")
        check_count(self.ended_at, "ended_at")
        if self.ended_at < self.started_at:
            malformed("a run cannot end (ended_at) before it started (started_at)")

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "machine_id": self.machine_id,
            "tcb_id": self.tcb_id,
            "loader_key": self.loader_key.hex(),
            "base_model": self.base_model.to_json(),
            "datasets": [ref.to_json() for ref in self.datasets],
            "engine": self.engine.to_json(),
            "hyperparameters": self.hyperparameters,
            "metrics": self.metrics.to_json(),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }

    @classmethod
    def from_json(cls, data: object) -> FinetunePredicate:
        f = json_object(data, "predicate", [field.name for field in dataclass_fields(cls)])
        return cls(
            order_id=f["order_id"],
            machine_id=f["machine_id"],
            tcb_id=f["tcb_id"],
            loader_key=hex_from_json(f["loader_key"], "predicate.loader_key", 32),
            base_model=ContentRef.from_json(f["base_model"], "predicate.base_model"),
            datasets=ContentRef.list_from_json(f["datasets"], "predicate.datasets"),
            engine=ContentRef.from_json(f["engine"], "predicate.engine"),
            hyperparameters=f["hyperparameters"],
            metrics=Metrics.from_json(f["metrics"]),
            started_at=f["started_at"],
            ended_at=f["ended_at"],
        )


@dataclass(frozen=True)
class ProvenanceManifest:
    """A verified manifest: its subjects, its predicate, and its digest (compare it with the ledger's)."""

    subjects: tuple[Subject, ...]
    predicate: FinetunePredicate
    digest: str


def statement_json(subjects: Sequence[Subject], predicate: FinetunePredicate) -> dict[str, Any]:
    """The in-toto Statement v1 object, before it is serialized into the envelope."""
    check_items(tuple(subjects), "subjects", Subject, min_items=1, max_items=MAX_SUBJECTS)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [subject.to_json() for subject in subjects],
        "predicateType": FINETUNE_PREDICATE,
        "predicate": predicate.to_json(),
    }


def _parse_statement(payload: bytes) -> tuple[tuple[Subject, ...], FinetunePredicate]:
    f = json_object(parse_json(payload, "statement", MAX_ENVELOPE), "statement", STATEMENT_FIELDS)
    if f["_type"] != STATEMENT_TYPE:
        malformed(f"statement _type is {f['_type']!r:.80}, expected {STATEMENT_TYPE}")
    if f["predicateType"] != FINETUNE_PREDICATE:
        malformed(f"predicateType is {f['predicateType']!r:.80}, expected {FINETUNE_PREDICATE}")
    items = json_list(f["subject"], "statement subject", MAX_SUBJECTS)
    subjects = tuple(Subject.from_json(item, f"subject[{i}]") for i, item in enumerate(items))
    check_items(subjects, "subjects", Subject, min_items=1, max_items=MAX_SUBJECTS)
    return subjects, FinetunePredicate.from_json(f["predicate"])


def build_manifest(subjects: Sequence[Subject], predicate: FinetunePredicate, loader: Identity) -> Envelope:
    """Sign the statement with the loader key named in the predicate; publish ``envelope.to_bytes()``."""
    if predicate.loader_key != loader.public.signing_key:
        raise MalformedInput(
            f"the predicate names loader key {address_of(predicate.loader_key)} but {loader.address} is signing; "
            "put the signing loader's public key in the predicate"
        )
    return sign_envelope(PAYLOAD_TYPE, canonical_json(statement_json(subjects, predicate)), loader)


def manifest_digest(envelope: Envelope | bytes | str) -> str:
    """Digest of the envelope's canonical JSON: the value recorded on the ledger for the order."""
    parsed = envelope if isinstance(envelope, Envelope) else Envelope.parse(envelope)
    return digest_bytes(parsed.to_bytes())


def verify_manifest(
    envelope: bytes | str,
    *,
    loader_public_key: bytes,
    expected_subject_digest: str | None = None,
    expected_order_id: str | None = None,
    expected_digest: str | None = None,
    checklist: Checklist | None = None,
) -> ProvenanceManifest:
    """Check a published manifest offline and return it parsed.

    ``loader_public_key`` is the attested loader's Ed25519 key (from its verified TCB). The optional
    expectations bind the manifest to the adapter in hand, the order asked about and the digest on the ledger.
    Each check is recorded in ``checklist``; the first failure raises a typed error whose ``check`` detail names it.
    """
    checklist = checklist if checklist is not None else Checklist()
    with checklist.run("envelope", "DSSE JSON envelope"):
        parsed = Envelope.parse(envelope)
    payload = verify_envelope(parsed, payload_type=PAYLOAD_TYPE, public_keys=(loader_public_key,), checklist=checklist)
    with checklist.run("statement", FINETUNE_PREDICATE):
        subjects, predicate = _parse_statement(payload)
    with checklist.run("loader key", address_of(loader_public_key)):
        if predicate.loader_key != loader_public_key:
            raise BindingMismatch(
                f"the predicate names loader key {address_of(predicate.loader_key)}, not the signer's: "
                "the statement was made for another machine; do not trust it"
            )
    if expected_order_id is not None:
        with checklist.run("order", expected_order_id):
            check_binding(predicate.order_id, expected_order_id, "order")
    if expected_subject_digest is not None:
        with checklist.run("subject digest", expected_subject_digest):
            if expected_subject_digest not in {subject.digest for subject in subjects}:
                raise DigestMismatch(
                    f"no subject of the manifest has digest {expected_subject_digest}: this manifest describes "
                    "another artifact; fetch the manifest published for yours"
                )
    digest = manifest_digest(parsed)
    if expected_digest is not None:
        with checklist.run("ledger digest", expected_digest):
            check_ledger_digest(digest, expected_digest, "manifest")
    return ProvenanceManifest(subjects, predicate, digest)

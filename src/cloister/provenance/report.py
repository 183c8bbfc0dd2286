"""The order report: what the trusted loader did for one order, signed with its attested key.

It names the order, machine and TCB, the engine and every input (offer ids and plaintext digests), every output
(plaintext digest and the URI of its ciphertext), the run's times, the metered usage, the checkpoint history and
the workspace wipe. On the wire it is canonical JSON ``{"report", "signer", "signature"}``; the signature is
``Identity.sign`` in the :data:`REPORT_DOMAIN` domain over the canonical report, and :func:`report_digest` of
the whole is what the ledger records.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final, Literal

from cloister.attest.checks import Checklist
from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity, address_of, verify_signature
from cloister.errors import InvalidSignature
from cloister.provenance.fields import (
    MAX_TEXT,
    MAX_URI,
    ContentRef,
    FlatRecord,
    check_binding,
    check_count,
    check_digest,
    check_id,
    check_items,
    check_ledger_digest,
    check_refs,
    check_text,
    hex_from_json,
    json_list,
    json_object,
    malformed,
    parse_json,
)

REPORT_DOMAIN = "cloister/order-report/v1"
MAX_REPORT = 1 << 20
"""Largest signed report accepted, in bytes of JSON text."""
MAX_CHECKPOINTS = 4096
WIRE_FIELDS = ("report", "signer", "signature")
MAX_WIPED_PATHS = 64

Outcome = Literal["completed", "failed"]
COMPLETED: Final = "completed"
FAILED: Final = "failed"
OUTCOMES: Final[tuple[Outcome, ...]] = (COMPLETED, FAILED)


@dataclass(frozen=True)
class Output(FlatRecord):
    """One result: its name in the job (``adapter``, ``loss_curve``…), plaintext digest, ciphertext URI."""

    name: str
    digest: str
    uri: str

    def __post_init__(self) -> None:
        check_text(self.name, "output name")
        check_digest(self.digest, f"digest of output {self.name!r}")
        check_text(self.uri, f"URI of output {self.name!r}", MAX_URI)


@dataclass(frozen=True)
class Usage(FlatRecord):
    """What the loader metered: wall seconds of the run, training steps, tokens processed."""

    seconds: int
    steps: int
    tokens: int

    def __post_init__(self) -> None:
        for name in ("seconds", "steps", "tokens"):
            check_count(getattr(self, name), f"usage.{name}")


@dataclass(frozen=True)
class Checkpoint(FlatRecord):
    """An encrypted checkpoint: the step it holds, its plaintext digest, its ciphertext URI, when (Unix s)."""

    step: int
    digest: str
    uri: str
    at: int

    def __post_init__(self) -> None:
        check_count(self.step, "checkpoint step")
        check_digest(self.digest, f"digest of checkpoint at step {self.step}")
        check_text(self.uri, f"URI of checkpoint at step {self.step}", MAX_URI)
        check_count(self.at, f"time of checkpoint at step {self.step}")


@dataclass(frozen=True)
class Wipe:
    """The workspace wipe: which workspace folders were erased, how many files and bytes, and when (Unix s)."""

    paths: tuple[str, ...]
    files: int
    size: int
    at: int

    def __post_init__(self) -> None:
        check_items(self.paths, "wiped paths", str, min_items=1, max_items=MAX_WIPED_PATHS)
        for path in self.paths:
            check_text(path, "a wiped path", MAX_URI)
        check_count(self.files, "wiped files")
        check_count(self.size, "wiped bytes")
        check_count(self.at, "wipe time")

    def to_json(self) -> dict[str, Any]:
        return {"paths": list(self.paths), "files": self.files, "size": self.size, "at": self.at}

    @classmethod
    def from_json(cls, data: object) -> Wipe:
        f = json_object(data, "wipe", ("paths", "files", "size", "at"))
        return cls(tuple(json_list(f["paths"], "wipe.paths", MAX_WIPED_PATHS)), f["files"], f["size"], f["at"])


@dataclass(frozen=True)
class OrderReport:
    """What one loader did for one order. A failed run has ``outcome="failed"`` and says why."""

    order_id: str
    machine_id: str
    tcb_id: str
    engine: ContentRef
    inputs: tuple[ContentRef, ...]
    outputs: tuple[Output, ...]
    started_at: int
    ended_at: int
    usage: Usage
    checkpoints: tuple[Checkpoint, ...]
    wipe: Wipe
    outcome: Outcome = COMPLETED
    failure_reason: str | None = None

    def __post_init__(self) -> None:
        check_id(self.order_id, "order id")
        check_id(self.machine_id, "machine id")
        check_digest(self.tcb_id, "TCB id")
        check_items((self.engine,), "engine", ContentRef)
        check_refs(self.inputs, "inputs")
        check_items(self.outputs, "outputs", Output)
        if len({output.name for output in self.outputs}) != len(self.outputs):
            malformed("two outputs have the same name")
        check_count(self.started_at, "started_at")
        check_count(self.ended_at, "ended_at")
        if self.ended_at < self.started_at:
            malformed("a run cannot end (ended_at) before it started (started_at)")
        check_items((self.usage,), "usage", Usage)
        check_items(self.checkpoints, "checkpoints", Checkpoint, max_items=MAX_CHECKPOINTS)
        steps = [checkpoint.step for checkpoint in self.checkpoints]
        if any(later <= earlier for earlier, later in pairwise(steps)):
            malformed("checkpoint steps must strictly increase")
        check_items((self.wipe,), "wipe", Wipe)
        if self.wipe.at < self.ended_at:
            malformed("the workspace wipe cannot precede the end of the run")
        self._check_outcome()

    def _check_outcome(self) -> None:
        if self.outcome not in OUTCOMES:
            malformed(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r:.80}")
        if self.outcome == COMPLETED and (self.failure_reason is not None or not self.outputs):
            malformed("a completed report lists its outputs and has no failure_reason")
        if self.outcome == FAILED:
            check_text(self.failure_reason, "failure_reason", MAX_TEXT)

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "machine_id": self.machine_id,
            "tcb_id": self.tcb_id,
            "engine": self.engine.to_json(),
            "inputs": [ref.to_json() for ref in self.inputs],
            "outputs": [output.to_json() for output in self.outputs],
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "usage": self.usage.to_json(),
            "checkpoints": [checkpoint.to_json() for checkpoint in self.checkpoints],
            "wipe": self.wipe.to_json(),
            "outcome": self.outcome,
            "failure_reason": self.failure_reason,
        }

    @classmethod
    def from_json(cls, data: object) -> OrderReport:
        f = json_object(data, "order report", cls.__dataclass_fields__)
        return cls(
            order_id=f["order_id"],
            machine_id=f["machine_id"],
            tcb_id=f["tcb_id"],
            engine=ContentRef.from_json(f["engine"], "engine"),
            inputs=ContentRef.list_from_json(f["inputs"], "inputs"),
            outputs=Output.list_from_json(f["outputs"], "outputs"),
            started_at=f["started_at"],
            ended_at=f["ended_at"],
            usage=Usage.from_json(f["usage"], "usage"),
            checkpoints=Checkpoint.list_from_json(f["checkpoints"], "checkpoints", MAX_CHECKPOINTS),
            wipe=Wipe.from_json(f["wipe"]),
            outcome=f["outcome"],
            failure_reason=f["failure_reason"],
        )


@dataclass(frozen=True)
class SignedReport:
    """A report with the loader key that signed it; publish :meth:`to_bytes`."""

    report: OrderReport
    signer: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return _wire(self.report.to_json(), self.signer, self.signature)


def _wire(report: object, signer: bytes, signature: bytes) -> bytes:
    return canonical_json({"report": report, "signer": signer.hex(), "signature": signature.hex()})


def _parse_wire(data: bytes | str) -> tuple[object, bytes, bytes]:
    """The unverified parts of a signed report: the report JSON, the signer key, the signature."""
    f = json_object(parse_json(data, "a signed order report", MAX_REPORT), "signed order report", WIRE_FIELDS)
    return f["report"], hex_from_json(f["signer"], "signer", 32), hex_from_json(f["signature"], "signature", 64)


def sign_report(report: OrderReport, loader: Identity) -> SignedReport:
    """Sign the canonical report with the loader's key in :data:`REPORT_DOMAIN`."""
    signature = loader.sign(REPORT_DOMAIN, canonical_json(report.to_json()))
    return SignedReport(report, loader.public.signing_key, signature)


def report_digest(signed: SignedReport | bytes | str) -> str:
    """Digest of the signed report's canonical JSON: the value recorded on the ledger for the order."""
    if isinstance(signed, SignedReport):
        return digest_bytes(signed.to_bytes())
    return digest_bytes(_wire(*_parse_wire(signed)))


def verify_report(
    data: bytes | str,
    *,
    loader_public_key: bytes,
    expected_order_id: str,
    expected_digest: str | None = None,
    checklist: Checklist | None = None,
) -> OrderReport:
    """Check a signed report offline and return it parsed.

    ``loader_public_key`` is the attested loader's Ed25519 key (from the machine's verified TCB);
    ``expected_order_id`` refuses a genuine report replayed for another order; ``expected_digest`` (the
    ledger's) refuses one the ledger does not record. Each check is recorded in ``checklist``; the first failure
    raises a typed error whose ``check`` detail names it.
    """
    checklist = checklist if checklist is not None else Checklist()
    with checklist.run("format", "canonical JSON {report, signer, signature}"):
        raw, signer, signature = _parse_wire(data)
        signed_bytes = canonical_json(raw)
    with checklist.run("signature", f"Ed25519 by loader {address_of(loader_public_key)}, domain {REPORT_DOMAIN}"):
        if signer != loader_public_key:
            raise InvalidSignature(
                f"the report is signed by {address_of(signer)}, not by the order's attested loader "
                f"{address_of(loader_public_key)}; do not trust it"
            )
        try:
            verify_signature(loader_public_key, REPORT_DOMAIN, signed_bytes, signature)
        except InvalidSignature:
            raise InvalidSignature(
                "the report's signature does not verify: it was altered after the loader signed it; do not trust it"
            ) from None
    with checklist.run("report", "every field well-formed"):
        report = OrderReport.from_json(raw)
    with checklist.run("order", expected_order_id):
        check_binding(report.order_id, expected_order_id, "order")
    if expected_digest is not None:
        with checklist.run("ledger digest", expected_digest):
            check_ledger_digest(digest_bytes(_wire(raw, signer, signature)), expected_digest, "report")
    return report

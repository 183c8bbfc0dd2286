"""The transaction payloads: one frozen dataclass per transaction type, parsed strictly at the edge.

A payload's JSON form is what goes into :class:`~cloister.ledger.envelope.Transaction.payload`; the contracts
only ever see payloads that :func:`parse_payload` accepted, so handlers work on checked, typed values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Final, Self

from cloister.consensus.commitment import MAX_COMMITMENT
from cloister.crypto.canonical import canonical_json
from cloister.errors import InvalidTransaction, MalformedInput
from cloister.ledger.records import (
    INFERENCE,
    MACHINE_ID_PREFIX,
    MAX_ITEMS,
    MAX_REASON,
    MAX_SEALED_KEY,
    MAX_TCB_EVIDENCE,
    MAX_TEXT,
    MAX_URI,
    OFFER_ID_PREFIX,
    ORDER_ID_PREFIX,
    ORDER_KINDS,
    SIGNATURE_SIZE,
    DeploymentTerms,
    Fields,
    JsonRecord,
    OfferKind,
    OrderKind,
    Pricing,
    Restrictions,
    read_offer_terms,
    read_order_offers,
)

MAX_PARAMS: Final = 16 * 1024
"""Largest canonical JSON of an order's hyper-parameters, in bytes."""
MAX_LEASE_HOURS: Final = 24 * 366


class Payload(JsonRecord):
    """Base of every payload: ``TYPE`` names the transaction; bad input is :class:`InvalidTransaction`."""

    TYPE: ClassVar[str]

    @classmethod
    def label(cls) -> str:
        return f"{cls.TYPE} payload"

    def to_payload(self) -> dict[str, Any]:
        return self.to_json()

    @classmethod
    def from_payload(cls, data: object) -> Self:
        try:
            return cls.from_json(data)
        except MalformedInput as exc:
            raise InvalidTransaction(f"{exc.message}; correct the transaction and send it again") from None


# --- accounts, faucet, stake --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RegisterAccount(Payload):
    """Create the sender's account; its signing key is the envelope's, its sealing key is given here."""

    TYPE: ClassVar[str] = "account.register"
    name: str
    sealing_key: bytes

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.text("name"), f.hex_bytes("sealing_key"))


@dataclasses.dataclass(frozen=True)
class _Amount(Payload):
    amount: int

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.integer("amount", 1))


@dataclasses.dataclass(frozen=True)
class FaucetDrip(_Amount):
    TYPE: ClassVar[str] = "faucet.drip"


@dataclasses.dataclass(frozen=True)
class DepositStake(_Amount):
    TYPE: ClassVar[str] = "stake.deposit"


@dataclasses.dataclass(frozen=True)
class WithdrawStake(_Amount):
    TYPE: ClassVar[str] = "stake.withdraw"


@dataclasses.dataclass(frozen=True)
class Transfer(Payload):
    TYPE: ClassVar[str] = "transfer"
    to: str
    amount: int

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.address("to"), f.integer("amount", 1))


# --- providers and machines ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RegisterProvider(Payload):
    TYPE: ClassVar[str] = "provider.register"
    name: str
    description: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.text("name"), f.text("description", MAX_TEXT, empty=True))


@dataclasses.dataclass(frozen=True)
class ChallengeMachine(Payload):
    """Ask the ledger for a fresh nonce; the provider's next ``machine.register`` TCB must answer it."""

    TYPE: ClassVar[str] = "machine.challenge"

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls()


@dataclasses.dataclass(frozen=True)
class RegisterMachine(Payload):
    """A provider's machine and its TCB (:class:`cloister.attest.tcb.Tcb` as canonical JSON).

    The platform, the declared specs and the loader keys content keys get sealed to are all read from the TCB,
    where the CPU report binds them; only the region is declared here.
    """

    TYPE: ClassVar[str] = "machine.register"
    BASE64 = frozenset({"tcb_evidence"})
    region: str
    tcb_evidence: bytes

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.token("region"), f.b64_bytes("tcb_evidence", MAX_TCB_EVIDENCE))


@dataclasses.dataclass(frozen=True)
class _MachineRef(Payload):
    machine_id: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.record_id("machine_id", MACHINE_ID_PREFIX))


@dataclasses.dataclass(frozen=True)
class Heartbeat(_MachineRef):
    TYPE: ClassVar[str] = "machine.heartbeat"


@dataclasses.dataclass(frozen=True)
class RetireMachine(_MachineRef):
    TYPE: ClassVar[str] = "machine.retire"


# --- offers -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CreateOffer(Payload):
    """Content (model, dataset, engine) by digest and blob URI, or compute by machine ids."""

    TYPE: ClassVar[str] = "offer.create"
    kind: OfferKind
    name: str
    description: str
    content_digest: str | None
    blob_uri: str | None
    size: int | None
    pricing: Pricing
    restrictions: Restrictions
    machine_ids: tuple[str, ...]

    @classmethod
    def read(cls, f: Fields) -> Self:
        kind, (digest, uri, size), pricing, machine_ids = read_offer_terms(f)
        return cls(
            kind,
            f.text("name"),
            f.text("description", MAX_TEXT, empty=True),
            digest,
            uri,
            size,
            pricing,
            f.record("restrictions", Restrictions),
            machine_ids,
        )


@dataclasses.dataclass(frozen=True)
class RetireOffer(Payload):
    TYPE: ClassVar[str] = "offer.retire"
    offer_id: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.record_id("offer_id", OFFER_ID_PREFIX))


# --- orders and grants --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CreateOrder(Payload):
    """A fine-tuning job, or a deployment (``kind`` inference), over named offers; ``deposit`` is escrowed and
    must cover the worst-case price.

    A fine-tune reads datasets on one machine; a deployment serves the model and ``adapter_offers`` on
    ``replicas`` machines, and its params name the token price and the gateway (:class:`DeploymentTerms`).
    """

    TYPE: ClassVar[str] = "order.create"
    kind: OrderKind
    model_offer: str
    dataset_offers: tuple[str, ...]
    engine_offer: str
    compute_offer: str | None
    params: dict[str, Any]
    lease_hours: int
    replicas: int
    deposit: int
    adapter_offers: tuple[str, ...] = ()

    @classmethod
    def read(cls, f: Fields) -> Self:
        params = f.obj("params")
        if len(canonical_json(params)) > MAX_PARAMS:
            f.fail("params", f"at most {MAX_PARAMS} bytes of canonical JSON")
        kind = f.choice("kind", ORDER_KINDS)
        if kind == INFERENCE:
            DeploymentTerms.of(params)
        model = f.record_id("model_offer", OFFER_ID_PREFIX)
        datasets, adapters = read_order_offers(f, kind, model)
        return cls(
            kind,
            model,
            datasets,
            f.record_id("engine_offer", OFFER_ID_PREFIX),
            f.optional(lambda name: f.record_id(name, OFFER_ID_PREFIX), "compute_offer"),
            params,
            f.integer("lease_hours", 1, MAX_LEASE_HOURS),
            f.integer("replicas", 1, MAX_ITEMS if kind == INFERENCE else 1),
            f.integer("deposit"),
            adapters,
        )


@dataclasses.dataclass(frozen=True)
class PostGrant(Payload):
    """A content owner's key for one order, sealed to one assigned machine's loader."""

    TYPE: ClassVar[str] = "grant.post"
    BASE64 = frozenset({"sealed_key"})
    order_id: str
    offer_id: str
    machine_id: str
    sealed_key: bytes

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("offer_id", OFFER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.b64_bytes("sealed_key", MAX_SEALED_KEY),
        )


@dataclasses.dataclass(frozen=True)
class RefuseGrant(Payload):
    """A content owner declines to release its key to one assigned machine, saying why (for the developer)."""

    TYPE: ClassVar[str] = "grant.refuse"
    order_id: str
    offer_id: str
    machine_id: str
    reason: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("offer_id", OFFER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.text("reason", MAX_REASON),
        )


@dataclasses.dataclass(frozen=True)
class CancelOrder(Payload):
    TYPE: ClassVar[str] = "order.cancel"
    order_id: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.record_id("order_id", ORDER_ID_PREFIX))


@dataclasses.dataclass(frozen=True)
class StartOrder(Payload):
    TYPE: ClassVar[str] = "order.start"
    order_id: str
    machine_id: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.record_id("order_id", ORDER_ID_PREFIX), f.record_id("machine_id", MACHINE_ID_PREFIX))


@dataclasses.dataclass(frozen=True)
class CompleteOrder(Payload):
    """The final machine settles a fine-tune: usage, the signed report's and the manifest's digests, and where
    the delivery (report, manifest, sealed result keys) is."""

    TYPE: ClassVar[str] = "order.complete"
    order_id: str
    machine_id: str
    usage_seconds: int
    report_digest: str
    manifest_digest: str | None
    delivery_uri: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.integer("usage_seconds"),
            f.digest("report_digest"),
            f.optional(f.digest, "manifest_digest"),
            f.text("delivery_uri", MAX_URI),
        )


@dataclasses.dataclass(frozen=True)
class RecordCheckpoint(Payload):
    """The provider of the running machine records progress: a sealed checkpoint, the usage metered so far, and
    where the loader's signed notice of it (its key sealed to the order owner) is."""

    TYPE: ClassVar[str] = "order.checkpoint"
    order_id: str
    machine_id: str
    step: int
    usage_seconds: int
    checkpoint_digest: str
    notice_uri: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.integer("step", 1),
            f.integer("usage_seconds"),
            f.digest("checkpoint_digest"),
            f.text("notice_uri", MAX_URI),
        )


@dataclasses.dataclass(frozen=True)
class PostResumeGrant(Payload):
    """The order owner seals the latest released checkpoint's key to a replacement machine's loader."""

    TYPE: ClassVar[str] = "order.resume_grant"
    BASE64 = frozenset({"sealed_key"})
    order_id: str
    machine_id: str
    sealed_key: bytes

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.b64_bytes("sealed_key", MAX_SEALED_KEY),
        )


@dataclasses.dataclass(frozen=True)
class ReassignOrder(Payload):
    """Anyone moves an open order off an assigned machine that has stopped sending heartbeats."""

    TYPE: ClassVar[str] = "order.reassign"
    order_id: str
    machine_id: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.record_id("order_id", ORDER_ID_PREFIX), f.record_id("machine_id", MACHINE_ID_PREFIX))


@dataclasses.dataclass(frozen=True)
class FailOrder(Payload):
    """A provider gives up on a fine-tune, saying why and, if it published one, where the failed report is."""

    TYPE: ClassVar[str] = "order.fail"
    order_id: str
    machine_id: str
    reason: str
    delivery_uri: str | None

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.text("reason", MAX_TEXT),
            f.optional(lambda name: f.text(name, MAX_URI), "delivery_uri"),
        )


# --- deployments (inference orders) -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RegisterEndpoint(Payload):
    """A replica's provider publishes where it serves and the deployment key, signed by the machine's loader."""

    TYPE: ClassVar[str] = "deployment.endpoint"
    order_id: str
    machine_id: str
    url: str
    deployment_key: bytes
    key_signature: bytes

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.url("url"),
            f.hex_bytes("deployment_key"),
            f.hex_bytes("key_signature", SIGNATURE_SIZE),
        )


@dataclasses.dataclass(frozen=True)
class _OrderRef(Payload):
    order_id: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.record_id("order_id", ORDER_ID_PREFIX))


@dataclasses.dataclass(frozen=True)
class StopDeployment(_OrderRef):
    """The owner ends a deployment: providers and content owners are paid for the seconds served."""

    TYPE: ClassVar[str] = "deployment.stop"


@dataclasses.dataclass(frozen=True)
class _CreditAmount(Payload):
    order_id: str
    amount: int

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.record_id("order_id", ORDER_ID_PREFIX), f.integer("amount", 1))


@dataclasses.dataclass(frozen=True)
class DepositCredit(_CreditAmount):
    """An end user prepays a deployment's token price from its balance."""

    TYPE: ClassVar[str] = "credit.deposit"


@dataclasses.dataclass(frozen=True)
class WithdrawCredit(_CreditAmount):
    """An end user takes back unspent credit once the deployment is over."""

    TYPE: ClassVar[str] = "credit.withdraw"


@dataclasses.dataclass(frozen=True)
class SettleUsage(Payload):
    """The deployment's gateway charges one user for ``tokens``; ``receipts_digest`` names the receipts billed."""

    TYPE: ClassVar[str] = "usage.settle"
    order_id: str
    user: str
    tokens: int
    receipts_digest: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.address("user"),
            f.integer("tokens", 1),
            f.digest("receipts_digest"),
        )


@dataclasses.dataclass(frozen=True)
class OpenDispute(Payload):
    """The gateway brings replicas' conflicting signed commitments for one request to be judged."""

    TYPE: ClassVar[str] = "dispute.open"
    BASE64 = frozenset({"commitments"})
    order_id: str
    request_digest: str
    commitments: tuple[bytes, ...]

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.digest("request_digest"),
            f.b64_list("commitments", MAX_COMMITMENT, 2),
        )


@dataclasses.dataclass(frozen=True)
class ReportTimeout(Payload):
    """The gateway reports a replica that did not commit to a request before the timeout."""

    TYPE: ClassVar[str] = "replica.timeout"
    order_id: str
    machine_id: str
    request_digest: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.digest("request_digest"),
        )


PAYLOAD_TYPES: Final[dict[str, type[Payload]]] = {
    cls.TYPE: cls
    for cls in (
        RegisterAccount,
        FaucetDrip,
        Transfer,
        RegisterProvider,
        DepositStake,
        WithdrawStake,
        ChallengeMachine,
        RegisterMachine,
        Heartbeat,
        RetireMachine,
        CreateOffer,
        RetireOffer,
        CreateOrder,
        PostGrant,
        RefuseGrant,
        StartOrder,
        CompleteOrder,
        RecordCheckpoint,
        PostResumeGrant,
        ReassignOrder,
        FailOrder,
        CancelOrder,
        RegisterEndpoint,
        StopDeployment,
        DepositCredit,
        WithdrawCredit,
        SettleUsage,
        OpenDispute,
        ReportTimeout,
    )
}


def parse_payload(tx_type: str, payload: dict[str, Any]) -> Payload:
    """The typed payload of a transaction; unknown types and bad payloads are :class:`InvalidTransaction`."""
    cls = PAYLOAD_TYPES.get(tx_type)
    if cls is None:
        raise InvalidTransaction(
            f"unknown transaction type {tx_type!r}; this ledger accepts {', '.join(sorted(PAYLOAD_TYPES))}"
        )
    return cls.from_payload(payload)

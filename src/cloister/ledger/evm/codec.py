"""Between Cloister's typed payloads and records and the contract's ABI values.

Addresses are 20 bytes (``cl`` + hex), record ids 8 bytes (``of-`` + hex), digests 32 bytes. Records read
from the chain are rebuilt as their JSON form and parsed with the records' own strict ``from_json``, so a value
the contracts should never have stored fails loudly here instead of flowing on.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import format_digest, parse_digest
from cloister.crypto.identity import ADDRESS_PREFIX
from cloister.errors import MalformedInput
from cloister.ledger.records import (
    DISPUTE_ID_PREFIX,
    FINETUNE,
    INFERENCE,
    MACHINE_ID_PREFIX,
    OFFER_ID_PREFIX,
    OFFER_KINDS,
    ORDER_ID_PREFIX,
    ORDER_KINDS,
    ORDER_STATES,
    PRICING_MODELS,
    VERDICTS,
    Account,
    Challenge,
    Checkpoint,
    Credit,
    DeploymentTerms,
    Dispute,
    Endpoint,
    KeyGrant,
    Machine,
    Offer,
    Order,
    Pricing,
    Provider,
    Refusal,
    Restrictions,
    ResumeGrant,
    Timeout,
)
from cloister.ledger.transactions import (
    CancelOrder,
    ChallengeMachine,
    CompleteOrder,
    CreateOffer,
    CreateOrder,
    DepositCredit,
    DepositStake,
    FailOrder,
    FaucetDrip,
    Heartbeat,
    Payload,
    PostGrant,
    PostResumeGrant,
    ReassignOrder,
    RecordCheckpoint,
    RefuseGrant,
    RegisterProvider,
    ReportTimeout,
    RetireMachine,
    RetireOffer,
    SettleUsage,
    StartOrder,
    StopDeployment,
    Transfer,
    WithdrawCredit,
    WithdrawStake,
)

NONE_TIME = (1 << 64) - 1
"""How the contract stores a time that has not happened yet (``started_at`` before the start)."""


def address_bytes(address: str) -> bytes:
    return bytes.fromhex(address[len(ADDRESS_PREFIX) :])


def address_text(raw: bytes) -> str:
    return ADDRESS_PREFIX + raw.hex()


def id_bytes(record_id: str) -> bytes:
    return bytes.fromhex(record_id[3:])


def id_text(prefix: str, raw: bytes) -> str:
    return prefix + raw.hex()


def digest_text(raw: bytes) -> str:
    return format_digest(raw)


def optional_digest(raw: bytes) -> str | None:
    """A digest the contract stores as zero while it is unset."""
    return None if raw == bytes(32) else format_digest(raw)


def optional_text(text: str) -> str | None:
    """A text the contract stores as empty while it is unset (set, it is never empty)."""
    return text or None


@dataclass(frozen=True)
class Call:
    """A contract function and its arguments after the nonce (and, for creations, the transaction hash)."""

    function: str
    args: tuple[Any, ...]
    creates: bool = False


def _pricing(p: Pricing) -> tuple[int, int, int]:
    return (PRICING_MODELS.index(p.model), p.amount, p.share_bps)


def _restrictions(r: Restrictions) -> tuple[Any, ...]:
    return (
        list(r.platforms),
        list(r.regions),
        [parse_digest(d) for d in r.engine_digests],
        r.max_lease_hours or 0,
    )


def _ids(ids: tuple[str, ...]) -> list[bytes]:
    return [id_bytes(i) for i in ids]


def machine_input(m: Machine) -> tuple[Any, ...]:
    """The contract's ``MachineInput`` for an appraised machine record (what the registrar signs)."""
    return (
        m.region,
        m.tcb_evidence,
        m.platform,
        m.specs.cpu_cores,
        m.specs.memory_gib,
        m.specs.disk_gib,
        list(m.specs.gpus),
        m.loader_signing_key,
        m.loader_sealing_key,
        parse_digest(m.attestation_digest),
        VERDICTS.index(m.attestation_verdict),
    )


def _create_offer(p: CreateOffer) -> Call:
    offer = (
        OFFER_KINDS.index(p.kind),
        p.name,
        p.description,
        parse_digest(p.content_digest) if p.content_digest else bytes(32),
        p.blob_uri or "",
        p.size or 0,
        _pricing(p.pricing),
        _restrictions(p.restrictions),
        _ids(p.machine_ids),
    )
    return Call("createOffer", (offer,), creates=True)


def _create_order(p: CreateOrder) -> Call:
    """The contract stores a deployment's gateway and token price beside its params, which it cannot parse."""
    terms = DeploymentTerms.of(p.params) if p.kind == INFERENCE else None
    order = (
        ORDER_KINDS.index(p.kind),
        id_bytes(p.model_offer),
        _ids(p.dataset_offers),
        id_bytes(p.engine_offer),
        p.compute_offer is not None,
        id_bytes(p.compute_offer) if p.compute_offer else bytes(8),
        canonical_json(p.params),
        p.lease_hours,
        p.replicas,
        p.deposit,
        _ids(p.adapter_offers),
        address_bytes(terms.gateway) if terms else bytes(20),
        terms.price_per_1k_tokens if terms else 0,
    )
    return Call("createOrder", (order,), creates=True)


_CALLS: dict[type[Payload], Callable[[Any], Call]] = {
    FaucetDrip: lambda p: Call("faucetDrip", (p.amount,)),
    Transfer: lambda p: Call("transfer", (address_bytes(p.to), p.amount)),
    RegisterProvider: lambda p: Call("registerProvider", (p.name, p.description)),
    DepositStake: lambda p: Call("depositStake", (p.amount,)),
    WithdrawStake: lambda p: Call("withdrawStake", (p.amount,)),
    ChallengeMachine: lambda p: Call("challengeMachine", (), creates=True),
    Heartbeat: lambda p: Call("heartbeat", (id_bytes(p.machine_id),)),
    RetireMachine: lambda p: Call("retireMachine", (id_bytes(p.machine_id),)),
    CreateOffer: _create_offer,
    RetireOffer: lambda p: Call("retireOffer", (id_bytes(p.offer_id),)),
    CreateOrder: _create_order,
    PostGrant: lambda p: Call(
        "postGrant", (id_bytes(p.order_id), id_bytes(p.offer_id), id_bytes(p.machine_id), p.sealed_key)
    ),
    RefuseGrant: lambda p: Call(
        "refuseGrant", (id_bytes(p.order_id), id_bytes(p.offer_id), id_bytes(p.machine_id), p.reason)
    ),
    StartOrder: lambda p: Call("startOrder", (id_bytes(p.order_id), id_bytes(p.machine_id))),
    CompleteOrder: lambda p: Call(
        "completeOrder",
        (
            id_bytes(p.order_id),
            id_bytes(p.machine_id),
            p.usage_seconds,
            parse_digest(p.report_digest),
            parse_digest(p.manifest_digest) if p.manifest_digest else bytes(32),
            p.delivery_uri,
        ),
    ),
    RecordCheckpoint: lambda p: Call(
        "recordCheckpoint",
        (
            id_bytes(p.order_id),
            id_bytes(p.machine_id),
            p.step,
            p.usage_seconds,
            parse_digest(p.checkpoint_digest),
            p.notice_uri,
        ),
    ),
    PostResumeGrant: lambda p: Call("postResumeGrant", (id_bytes(p.order_id), id_bytes(p.machine_id), p.sealed_key)),
    ReassignOrder: lambda p: Call("reassignOrder", (id_bytes(p.order_id), id_bytes(p.machine_id))),
    FailOrder: lambda p: Call(
        "failOrder", (id_bytes(p.order_id), id_bytes(p.machine_id), p.reason, p.delivery_uri or "")
    ),
    CancelOrder: lambda p: Call("cancelOrder", (id_bytes(p.order_id),)),
    StopDeployment: lambda p: Call("stopDeployment", (id_bytes(p.order_id),)),
    DepositCredit: lambda p: Call("depositCredit", (id_bytes(p.order_id), p.amount)),
    WithdrawCredit: lambda p: Call("withdrawCredit", (id_bytes(p.order_id), p.amount)),
    SettleUsage: lambda p: Call(
        "settleUsage", (id_bytes(p.order_id), address_bytes(p.user), p.tokens, parse_digest(p.receipts_digest))
    ),
    ReportTimeout: lambda p: Call(
        "reportTimeout", (id_bytes(p.order_id), id_bytes(p.machine_id), parse_digest(p.request_digest))
    ),
}


def call_of(payload: Payload) -> Call:
    """The contract call of a payload; ``account.register``, ``machine.register``, ``deployment.endpoint`` and
    ``dispute.open`` are built by the ledger (they need the key binding or the registrar's signature)."""
    return _CALLS[type(payload)](payload)


# --- records from ABI values ---------------------------------------------------------------------------------


def _time(value: int) -> int | None:
    return None if value == NONE_TIME else value


def account_record(cl: bytes, value: tuple[Any, ...]) -> Account:
    _eth, balance, stake, nonce, signing_key, sealing_key, name, _binding = value
    return Account.from_json(
        {
            "address": address_text(cl),
            "name": name,
            "signing_key": signing_key.hex(),
            "sealing_key": sealing_key.hex(),
            "balance": balance,
            "stake": stake,
            "nonce": nonce,
        }
    )


def provider_record(cl: bytes, value: tuple[Any, ...]) -> Provider:
    _exists, name, description = value
    return Provider.from_json({"address": address_text(cl), "name": name, "description": description})


def challenge_record(provider: bytes, value: tuple[Any, ...]) -> Challenge | None:
    exists, used, issued_at, nonce = value
    if not exists:
        return None
    return Challenge.from_json(
        {"provider": address_text(provider), "nonce": nonce.hex(), "issued_at": issued_at, "used": used}
    )


def machine_record(value: tuple[Any, ...]) -> Machine:
    raw_id, provider, active, registered, heartbeat, signing, sealing, platform, region, specs, evidence = value[:11]
    attestation, verdict = value[11:]
    cpu, memory, disk, gpus = specs
    return Machine.from_json(
        {
            "machine_id": id_text(MACHINE_ID_PREFIX, raw_id),
            "provider": address_text(provider),
            "platform": platform,
            "region": region,
            "specs": {"cpu_cores": cpu, "memory_gib": memory, "gpus": list(gpus), "disk_gib": disk},
            "tcb_evidence": _b64(evidence),
            "loader_signing_key": signing.hex(),
            "loader_sealing_key": sealing.hex(),
            "registered_at": registered,
            "last_heartbeat": heartbeat,
            "active": active,
            "attestation_digest": digest_text(attestation),
            "attestation_verdict": VERDICTS[verdict],
        }
    )


def offer_record(value: tuple[Any, ...]) -> Offer:
    raw_id, owner, kind, active, created, size, digest, name, description, uri, pricing, limits, machines = value
    model, amount, share = pricing
    platforms, regions, engines, max_lease = limits
    content = OFFER_KINDS[kind] != "compute"
    return Offer.from_json(
        {
            "offer_id": id_text(OFFER_ID_PREFIX, raw_id),
            "owner": address_text(owner),
            "kind": OFFER_KINDS[kind],
            "name": name,
            "description": description,
            "content_digest": digest_text(digest) if content else None,
            "blob_uri": uri if content else None,
            "size": size if content else None,
            "pricing": {"model": PRICING_MODELS[model], "amount": amount, "share_bps": share},
            "restrictions": {
                "platforms": list(platforms),
                "regions": list(regions),
                "engine_digests": [digest_text(d) for d in engines],
                "max_lease_hours": max_lease or None,
            },
            "machine_ids": [id_text(MACHINE_ID_PREFIX, m) for m in machines],
            "created_at": created,
            "active": active,
        }
    )


def order_record(value: tuple[Any, ...]) -> Order:
    """The order, refused if a deployment's stored gateway or price disagree with its params (only a call that
    bypassed the client could store such a pair)."""
    (raw_id, owner, kind, state, model, engine, compute, lease, replicas, deposit, escrow, created, started, ended) = (
        value[:14]
    )
    usage, report, datasets, machines, params, failure, adapters, manifest, delivery, gateway, price = value[14:]
    state_name, kind_name = ORDER_STATES[state], ORDER_KINDS[kind]
    order = Order.from_json(
        {
            "order_id": id_text(ORDER_ID_PREFIX, raw_id),
            "owner": address_text(owner),
            "kind": kind_name,
            "model_offer": id_text(OFFER_ID_PREFIX, model),
            "dataset_offers": [id_text(OFFER_ID_PREFIX, d) for d in datasets],
            "engine_offer": id_text(OFFER_ID_PREFIX, engine),
            "compute_offer": id_text(OFFER_ID_PREFIX, compute),
            "params": loads(params),
            "lease_hours": lease,
            "replicas": replicas,
            "deposit": deposit,
            "escrow": escrow,
            "state": state_name,
            "machines": [id_text(MACHINE_ID_PREFIX, m) for m in machines],
            "created_at": created,
            "started_at": _time(started),
            "ended_at": _time(ended),
            "usage_seconds": usage,
            "report_digest": digest_text(report) if state_name == "completed" and kind_name == FINETUNE else None,
            "failure_reason": failure if state_name == "failed" else None,
            "adapter_offers": [id_text(OFFER_ID_PREFIX, a) for a in adapters],
            "manifest_digest": optional_digest(manifest),
            "delivery_uri": optional_text(delivery),
        }
    )
    if order.kind == INFERENCE:
        terms = DeploymentTerms.of(order.params)
        if (terms.gateway, terms.price_per_1k_tokens) != (address_text(gateway), price):
            raise MalformedInput(
                f"deployment {order.order_id} stores gateway {address_text(gateway)} and price {price}, but its "
                f"params say {terms.gateway} and {terms.price_per_1k_tokens}; it was not created through a client"
            )
    return order


def grant_record(order_id: str, value: tuple[Any, ...]) -> KeyGrant:
    offer_id, machine_id, owner, created, sealed = value
    return KeyGrant.from_json(
        {
            "order_id": order_id,
            "offer_id": id_text(OFFER_ID_PREFIX, offer_id),
            "machine_id": id_text(MACHINE_ID_PREFIX, machine_id),
            "owner": address_text(owner),
            "sealed_key": _b64(sealed),
            "created_at": created,
        }
    )


def refusal_record(order_id: str, value: tuple[Any, ...]) -> Refusal:
    offer_id, machine_id, owner, created, reason = value
    return Refusal.from_json(
        {
            "order_id": order_id,
            "offer_id": id_text(OFFER_ID_PREFIX, offer_id),
            "machine_id": id_text(MACHINE_ID_PREFIX, machine_id),
            "owner": address_text(owner),
            "reason": reason,
            "created_at": created,
        }
    )


def checkpoint_record(order_id: str, value: tuple[Any, ...]) -> Checkpoint:
    machine_id, compute, step, usage, digest, released, updated, notice = value
    return Checkpoint.from_json(
        {
            "order_id": order_id,
            "machine_id": id_text(MACHINE_ID_PREFIX, machine_id),
            "compute_offer": id_text(OFFER_ID_PREFIX, compute),
            "step": step,
            "usage_seconds": usage,
            "checkpoint_digest": optional_digest(digest),
            "released": released,
            "updated_at": updated,
            "notice_uri": optional_text(notice),
        }
    )


def resume_grant_record(order_id: str, value: tuple[Any, ...]) -> ResumeGrant:
    machine_id, digest, sealed, created = value
    return ResumeGrant.from_json(
        {
            "order_id": order_id,
            "machine_id": id_text(MACHINE_ID_PREFIX, machine_id),
            "checkpoint_digest": digest_text(digest),
            "sealed_key": _b64(sealed),
            "created_at": created,
        }
    )


def endpoint_record(order_id: str, value: tuple[Any, ...]) -> Endpoint:
    machine_id, url, key, signature, registered, removed = value
    return Endpoint.from_json(
        {
            "order_id": order_id,
            "machine_id": id_text(MACHINE_ID_PREFIX, machine_id),
            "url": url,
            "deployment_key": key.hex(),
            "key_signature": signature.hex(),
            "registered_at": registered,
            "removed_at": _time(removed),
        }
    )


def credit_record(order_id: str, user: bytes, value: tuple[Any, ...]) -> Credit | None:
    """The credit, or ``None`` if the user never had one (every write stamps ``updated_at``)."""
    balance, spent, updated = value
    if updated == 0:
        return None
    return Credit.from_json(
        {"order_id": order_id, "user": address_text(user), "balance": balance, "spent": spent, "updated_at": updated}
    )


def dispute_record(order_id: str, value: tuple[Any, ...]) -> Dispute:
    raw_id, request, commitments, output, slashed, rewarded, amount, opened_by, created = value
    return Dispute.from_json(
        {
            "dispute_id": id_text(DISPUTE_ID_PREFIX, raw_id),
            "order_id": order_id,
            "request_digest": digest_text(request),
            "commitments": [_b64(c) for c in commitments],
            "output_digest": optional_digest(output),
            "slashed": [id_text(MACHINE_ID_PREFIX, m) for m in slashed],
            "rewarded": [id_text(MACHINE_ID_PREFIX, m) for m in rewarded],
            "slashed_amount": amount,
            "opened_by": address_text(opened_by),
            "created_at": created,
        }
    )


def timeout_record(order_id: str, value: tuple[Any, ...]) -> Timeout:
    machine_id, request, amount, created = value
    return Timeout.from_json(
        {
            "order_id": order_id,
            "machine_id": id_text(MACHINE_ID_PREFIX, machine_id),
            "request_digest": digest_text(request),
            "amount": amount,
            "created_at": created,
        }
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()

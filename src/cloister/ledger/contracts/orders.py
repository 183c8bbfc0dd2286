"""Orders: creation with escrow and assignment, key grants, a fine-tune's run, and settlement or refund."""

from __future__ import annotations

import dataclasses
from typing import Final

from cloister.consensus.modes import parse_mode
from cloister.errors import (
    InsufficientFunds,
    InvalidConsensusMode,
    InvalidState,
    InvalidTransaction,
    NotAuthorized,
    RecordExists,
)
from cloister.ledger.contracts.assignment import assign, check_terms
from cloister.ledger.contracts.call import Call, Handler
from cloister.ledger.contracts.machines import provided_machine
from cloister.ledger.contracts.settlement import Share, settle
from cloister.ledger.records import (
    CANCELLED,
    COMPLETED,
    COMPUTE,
    DATASET,
    ENGINE,
    FAILED,
    FINETUNE,
    INFERENCE,
    MAX_SHARE_BPS,
    MODEL,
    OPEN_ORDER_STATES,
    ORDER_ID_PREFIX,
    PENDING_GRANTS,
    READY,
    REVENUE_SHARE,
    RUNNING,
    Checkpoint,
    DeploymentTerms,
    KeyGrant,
    Machine,
    Offer,
    OfferKind,
    Order,
    OrderKind,
    OrderState,
    Refusal,
    grant_key,
    refusal_key,
)
from cloister.ledger.transactions import (
    CancelOrder,
    CompleteOrder,
    CreateOrder,
    FailOrder,
    Payload,
    PostGrant,
    RefuseGrant,
    StartOrder,
)


def _offer_of_kind(call: Call, offer_id: str, kind: OfferKind) -> Offer:
    offer = call.read.offer(offer_id)
    if offer.kind != kind:
        raise InvalidTransaction(f"offer {offer_id} is a {offer.kind} offer, not a {kind} offer; check the ids")
    if not offer.active:
        raise InvalidState(f"{kind} offer {offer_id} is retired; choose an active offer")
    return offer


def _check_deployment(call: Call, p: CreateOrder, content: list[Offer]) -> None:
    """What only a deployment needs: a replica count the network allows, a known consensus mode, and revenue
    shares that leave something for the developer."""
    limit = call.params.max_replicas
    if p.replicas > limit:
        raise InvalidTransaction(f"a deployment may ask for at most {limit} replicas, not {p.replicas}; ask for fewer")
    consensus = DeploymentTerms.of(p.params).consensus
    if consensus is not None:
        try:
            parse_mode(consensus)
        except InvalidConsensusMode as exc:
            raise InvalidTransaction(f"params.consensus: {exc.message}") from None
    shares = sum(offer.pricing.share_bps for offer in content if offer.pricing.model == REVENUE_SHARE)
    if shares > MAX_SHARE_BPS:
        raise InvalidTransaction(
            f"the revenue shares of this deployment's offers add up to {shares} basis points, more than "
            f"{MAX_SHARE_BPS}; leave out an offer so that the shares fit in the price"
        )


def new_seat(call: Call, order_id: str, machine_id: str, compute_offer: str) -> Checkpoint:
    """A deployment's record of one assigned machine: its compute offer, later the seconds it served."""
    return Checkpoint(order_id, machine_id, compute_offer, 0, 0, None, False, call.now)


def create_order(call: Call, p: CreateOrder) -> None:
    """Check every offer's terms, assign machines, escrow a deposit that covers the worst-case price."""
    order_id = call.new_id(ORDER_ID_PREFIX)
    model = _offer_of_kind(call, p.model_offer, MODEL)
    datasets = [_offer_of_kind(call, offer_id, DATASET) for offer_id in p.dataset_offers]
    adapters = [_offer_of_kind(call, offer_id, MODEL) for offer_id in p.adapter_offers]
    engine = _offer_of_kind(call, p.engine_offer, ENGINE)
    compute = None if p.compute_offer is None else _offer_of_kind(call, p.compute_offer, COMPUTE)
    content = [model, *datasets, *adapters, engine]
    engine_digest = engine.content_digest or ""
    for offer in [*content, *([compute] if compute else [])]:
        check_terms(offer, engine_digest, p.lease_hours)
    if p.kind == INFERENCE:
        _check_deployment(call, p, content)
    picked = assign(call, order_id, p.kind, content, compute, lease_hours=p.lease_hours, replicas=p.replicas)
    required = sum(offer.pricing.deposit(p.lease_hours, p.replicas) for offer in content) + sum(
        candidate.offer.pricing.deposit(p.lease_hours, 1) for candidate in picked
    )
    if p.deposit < required:
        raise InsufficientFunds(
            f"a deposit of {p.deposit} units does not cover this order; deposit at least {required} units",
            required=required,
        )
    call.debit(call.sender, p.deposit, "this order's deposit")
    machines = tuple(candidate.machine.machine_id for candidate in picked)
    first = picked[0].offer.offer_id
    call.put(
        Order(
            order_id=order_id,
            owner=call.sender,
            kind=p.kind,
            model_offer=p.model_offer,
            dataset_offers=p.dataset_offers,
            engine_offer=p.engine_offer,
            compute_offer=first,
            params=p.params,
            lease_hours=p.lease_hours,
            replicas=p.replicas,
            deposit=p.deposit,
            escrow=p.deposit,
            state=PENDING_GRANTS,
            machines=machines,
            created_at=call.now,
            started_at=None,
            ended_at=None,
            usage_seconds=0,
            report_digest=None,
            failure_reason=None,
            adapter_offers=p.adapter_offers,
        )
    )
    if p.kind == INFERENCE:
        for candidate in picked:
            call.put(new_seat(call, order_id, candidate.machine.machine_id, candidate.offer.offer_id))
    call.emit("order.created", order_id=order_id, owner=call.sender, deposit=p.deposit, required=required)
    call.emit("order.assigned", order_id=order_id, machines=list(machines), compute_offer=first)


def require_kind(order: Order, kind: OrderKind, action: str) -> None:
    """Refuse a transaction meant for the other kind of order, saying which one applies."""
    if order.kind != kind:
        hint = "deployment.endpoint and deployment.stop" if order.kind == INFERENCE else "the order.* transactions"
        raise InvalidTransaction(
            f"order {order.order_id} is of kind {order.kind}; only {kind} orders can be {action} (use {hint})"
        )


def require_state(order: Order, allowed: tuple[OrderState, ...], action: str) -> None:
    if order.state not in allowed:
        raise InvalidState(
            f"order {order.order_id} is {order.state}; it can only be {action} when {' or '.join(allowed)}"
        )


def assignee(call: Call, order: Order, machine_id: str) -> Machine:
    """The assigned machine the sender provides: only it may report on the order."""
    if machine_id not in order.machines:
        raise NotAuthorized(f"machine {machine_id} is not assigned to order {order.order_id}")
    return provided_machine(call, machine_id)


GRANT_STATES: Final[dict[OrderKind, tuple[OrderState, ...]]] = {
    FINETUNE: (PENDING_GRANTS,),
    INFERENCE: (PENDING_GRANTS, READY, RUNNING),
}
"""When keys are decided: a fine-tune before it runs; a deployment also while it serves, for a replacement."""


def _grant_target(call: Call, order: Order, offer_id: str, machine_id: str) -> None:
    """Only the owner of one of the order's content offers decides on its key, for an assigned machine, while
    the order takes grants."""
    offer = call.read.offer(offer_id)
    if offer_id not in order.content_offers:
        raise NotAuthorized(f"offer {offer_id} is not part of order {order.order_id}; grant or refuse only its offers")
    if offer.owner != call.sender:
        raise NotAuthorized(f"offer {offer_id} belongs to {offer.owner}; only its owner can grant or refuse its key")
    if machine_id not in order.machines:
        raise NotAuthorized(f"machine {machine_id} is not assigned to order {order.order_id}; name an assignee")
    require_state(order, GRANT_STATES[order.kind], "granted or refused keys")


def post_grant(call: Call, p: PostGrant) -> None:
    order = call.read.order(p.order_id)
    _grant_target(call, order, p.offer_id, p.machine_id)
    key = grant_key(p.order_id, p.offer_id, p.machine_id)
    if call.exists(key):
        raise RecordExists(f"a key for offer {p.offer_id} on machine {p.machine_id} is already granted")
    call.put(KeyGrant(p.order_id, p.offer_id, p.machine_id, call.sender, p.sealed_key, call.now))
    call.emit("grant.posted", order_id=p.order_id, offer_id=p.offer_id, machine_id=p.machine_id)
    complete = len(call.read.grants(p.order_id)) == len(order.content_offers) * len(order.machines)
    if complete and order.state == PENDING_GRANTS:
        call.put(dataclasses.replace(order, state=READY))
        call.emit("order.ready", order_id=p.order_id, machines=list(order.machines))


def refuse_grant(call: Call, p: RefuseGrant) -> None:
    """Record the owner's refusal; the order keeps waiting (its owner may cancel for a full refund)."""
    order = call.read.order(p.order_id)
    _grant_target(call, order, p.offer_id, p.machine_id)
    if call.exists(grant_key(p.order_id, p.offer_id, p.machine_id)):
        raise InvalidState(
            f"the key for offer {p.offer_id} on machine {p.machine_id} is already granted; a grant cannot be "
            "taken back, so there is nothing to refuse"
        )
    if call.exists(refusal_key(p.order_id, p.offer_id, p.machine_id)):
        raise RecordExists(f"the key for offer {p.offer_id} on machine {p.machine_id} is already refused")
    call.put(Refusal(p.order_id, p.offer_id, p.machine_id, call.sender, p.reason, call.now))
    call.emit("grant.refused", order_id=p.order_id, offer_id=p.offer_id, machine_id=p.machine_id, reason=p.reason)


def start_order(call: Call, p: StartOrder) -> None:
    order = call.read.order(p.order_id)
    require_kind(order, FINETUNE, "started")
    assignee(call, order, p.machine_id)
    require_state(order, (READY,), "started")
    call.put(dataclasses.replace(order, state=RUNNING, started_at=call.now))
    call.emit("order.started", order_id=p.order_id, machine_id=p.machine_id)


def complete_order(call: Call, p: CompleteOrder) -> None:
    """Settle: ``usage_seconds`` is the time on this (the final) machine, capped by what is left of the lease."""
    order = call.read.order(p.order_id)
    require_kind(order, FINETUNE, "completed")
    assignee(call, order, p.machine_id)
    require_state(order, (RUNNING,), "completed")
    usage = min(p.usage_seconds, order.lease_hours * 3600 - order.usage_seconds)
    total = settle(call, order, finetune_share(order, usage), completed=True)
    call.put(
        dataclasses.replace(
            order,
            state=COMPLETED,
            escrow=0,
            ended_at=call.now,
            usage_seconds=total,
            report_digest=p.report_digest,
            manifest_digest=p.manifest_digest,
            delivery_uri=p.delivery_uri,
        )
    )
    call.emit(
        "order.completed",
        order_id=p.order_id,
        usage_seconds=total,
        report_digest=p.report_digest,
        manifest_digest=p.manifest_digest,
        delivery_uri=p.delivery_uri,
    )


def finetune_share(order: Order, usage: int) -> list[Share]:
    """A fine-tune ends on its one current machine, under the order's compute offer."""
    return [] if order.compute_offer is None else [(order.compute_offer, usage)]


def fail_order(call: Call, p: FailOrder) -> None:
    """A provider gives up on an order: only machines it left are paid for (per hour), the rest goes back."""
    order = call.read.order(p.order_id)
    require_kind(order, FINETUNE, "failed by a provider")
    assignee(call, order, p.machine_id)
    require_state(order, OPEN_ORDER_STATES, "failed")
    settle(call, order, [], completed=False)
    call.put(
        dataclasses.replace(
            order, state=FAILED, escrow=0, ended_at=call.now, failure_reason=p.reason, delivery_uri=p.delivery_uri
        )
    )
    call.emit(
        "order.failed", order_id=p.order_id, machine_id=p.machine_id, reason=p.reason, delivery_uri=p.delivery_uri
    )


def cancel_order(call: Call, p: CancelOrder) -> None:
    """The owner withdraws an order that is not running: only machines it left are paid for, the rest goes back."""
    order = call.read.order(p.order_id)
    if order.owner != call.sender:
        raise NotAuthorized(f"order {p.order_id} belongs to {order.owner}; only its owner can cancel it")
    require_state(order, (PENDING_GRANTS, READY), "cancelled")
    settle(call, order, [], completed=False)
    call.put(dataclasses.replace(order, state=CANCELLED, escrow=0, ended_at=call.now))
    call.emit("order.cancelled", order_id=p.order_id)


HANDLERS: dict[type[Payload], Handler] = {
    CreateOrder: create_order,
    PostGrant: post_grant,
    RefuseGrant: refuse_grant,
    StartOrder: start_order,
    CompleteOrder: complete_order,
    FailOrder: fail_order,
    CancelOrder: cancel_order,
}

"""Deployments (inference orders): replicas publish endpoints, end users prepay credit, the gateway bills tokens,
and the owner stops the deployment, paying each machine for the seconds it served.

Each assigned machine has a *seat*, a :class:`~cloister.ledger.records.Checkpoint` record naming the compute
offer it was drawn under; a machine that leaves (``order.reassign``) releases its seat with the seconds it
served, so settlement pays every provider its own share. Serving seconds run from an endpoint's registration to
its removal, clipped to the lease window that opens with the first endpoint.
"""

from __future__ import annotations

import dataclasses

from cloister.consensus.endpoint import verify_endpoint
from cloister.errors import (
    InsufficientFunds,
    InvalidSignature,
    InvalidState,
    InvalidTransaction,
    MalformedInput,
    NotAuthorized,
)
from cloister.ledger.contracts.call import Call, Handler
from cloister.ledger.contracts.orders import assignee, require_kind, require_state
from cloister.ledger.contracts.settlement import Share, pay, settle
from cloister.ledger.records import (
    CANCELLED,
    COMPLETED,
    FAILED,
    INFERENCE,
    MAX_AMOUNT,
    MAX_SHARE_BPS,
    PENDING_GRANTS,
    READY,
    REVENUE_SHARE,
    RUNNING,
    Checkpoint,
    DeploymentTerms,
    Endpoint,
    Order,
)
from cloister.ledger.transactions import (
    DepositCredit,
    Payload,
    RegisterEndpoint,
    SettleUsage,
    StopDeployment,
    WithdrawCredit,
)


def require_gateway(call: Call, order: Order, action: str) -> None:
    """Only the gateway the deployment's owner named may bill it and judge its replicas."""
    gateway = DeploymentTerms.of(order.params).gateway
    if call.sender != gateway:
        raise NotAuthorized(f"only deployment {order.order_id}'s gateway {gateway} may {action}")


def seat(call: Call, order: Order, machine_id: str) -> Checkpoint:
    """The seat of a machine assigned to the deployment now or before; refuse any other machine."""
    found = call.read.checkpoint(order.order_id, machine_id)
    if found is None:
        raise NotAuthorized(f"machine {machine_id} was never assigned to deployment {order.order_id}; check the id")
    return found


def serving_seconds(order: Order, endpoint: Endpoint, now: int) -> int:
    """Seconds ``endpoint`` served inside the lease window (from the first endpoint, ``lease_hours`` long)."""
    start = order.started_at if order.started_at is not None else endpoint.registered_at
    end = min(endpoint.removed_at if endpoint.removed_at is not None else now, start + order.lease_hours * 3600)
    return max(0, end - max(endpoint.registered_at, start))


def leave(call: Call, order: Order, machine_id: str) -> int:
    """End the machine's endpoint now (if it published one) and return the seconds it served."""
    endpoint = call.read.endpoint(order.order_id, machine_id)
    if endpoint is None:
        return 0
    if endpoint.removed_at is None:
        endpoint = dataclasses.replace(endpoint, removed_at=call.now)
        call.put(endpoint)
    return serving_seconds(order, endpoint, call.now)


def register_endpoint(call: Call, p: RegisterEndpoint) -> None:
    """A replica joins (or moves its URL): once its keys are granted, with the one deployment key, loader-signed."""
    order = call.read.order(p.order_id)
    require_kind(order, INFERENCE, "served")
    machine = assignee(call, order, p.machine_id)
    require_state(order, (READY, RUNNING), "given endpoints")
    granted = {g.offer_id for g in call.read.grants(p.order_id) if g.machine_id == p.machine_id}
    missing = [offer_id for offer_id in order.content_offers if offer_id not in granted]
    if missing:
        raise InvalidState(
            f"machine {p.machine_id} still waits for the keys of offer(s) {', '.join(missing)}; "
            "publish its endpoint once every key is granted"
        )
    try:
        verify_endpoint(machine.loader_signing_key, p.order_id, p.machine_id, p.url, p.deployment_key, p.key_signature)
    except (InvalidSignature, MalformedInput) as exc:
        raise InvalidTransaction(f"key_signature: {exc.message}") from None
    for other in call.read.endpoints(p.order_id):
        if other.deployment_key != p.deployment_key:
            raise InvalidState(
                f"machine {other.machine_id} already published deployment key {other.deployment_key.hex()} for "
                f"order {p.order_id}; every replica serves with that one key (join the deployment vault)"
            )
    existing = call.read.endpoint(p.order_id, p.machine_id)
    registered_at = call.now if existing is None else existing.registered_at
    call.put(Endpoint(p.order_id, p.machine_id, p.url, p.deployment_key, p.key_signature, registered_at, None))
    if order.state != RUNNING:
        started_at = call.now if order.started_at is None else order.started_at
        call.put(dataclasses.replace(order, state=RUNNING, started_at=started_at))
    call.emit(
        "deployment.endpoint",
        order_id=p.order_id,
        machine_id=p.machine_id,
        url=p.url,
        deployment_key=p.deployment_key.hex(),
    )


def stop_deployment(call: Call, p: StopDeployment) -> None:
    """The owner ends the deployment: every machine's endpoint is removed and its seconds paid."""
    order = call.read.order(p.order_id)
    require_kind(order, INFERENCE, "stopped")
    if order.owner != call.sender:
        raise NotAuthorized(f"deployment {p.order_id} belongs to {order.owner}; only its owner can stop it")
    if order.state == PENDING_GRANTS:
        raise InvalidState(f"deployment {p.order_id} still waits for grants; cancel it instead (order.cancel)")
    require_state(order, (READY, RUNNING), "stopped")
    shares: list[Share] = [
        (seat(call, order, machine_id).compute_offer, leave(call, order, machine_id)) for machine_id in order.machines
    ]
    total = settle(call, order, shares, completed=True)
    call.put(dataclasses.replace(order, state=COMPLETED, escrow=0, ended_at=call.now, usage_seconds=total))
    call.emit("deployment.stopped", order_id=p.order_id, serving_seconds=total)


def deposit_credit(call: Call, p: DepositCredit) -> None:
    order = call.read.order(p.order_id)
    require_kind(order, INFERENCE, "credited")
    require_state(order, (READY, RUNNING), "credited")
    credit = call.read.credit(p.order_id, call.sender)
    if credit.balance + p.amount > MAX_AMOUNT:
        raise InvalidState(f"the credit would exceed {MAX_AMOUNT} units; spend or withdraw some first")
    call.debit(call.sender, p.amount, "this credit deposit")
    balance = credit.balance + p.amount
    call.put(dataclasses.replace(credit, balance=balance, updated_at=call.now))
    call.emit("credit.deposited", order_id=p.order_id, user=call.sender, amount=p.amount, balance=balance)


def withdraw_credit(call: Call, p: WithdrawCredit) -> None:
    """Unspent credit comes back once the deployment is over (while it runs, the gateway may still bill it)."""
    order = call.read.order(p.order_id)
    require_kind(order, INFERENCE, "credited")
    if order.state not in (COMPLETED, FAILED, CANCELLED):
        raise InvalidState(
            f"deployment {p.order_id} is {order.state}; unspent credit comes back once its owner stops it"
        )
    credit = call.read.credit(p.order_id, call.sender)
    if p.amount > credit.balance:
        raise InsufficientFunds(
            f"cannot withdraw {p.amount} units: {call.sender} has {credit.balance} left on deployment "
            f"{p.order_id}; withdraw less",
            needed=p.amount,
            balance=credit.balance,
        )
    balance = credit.balance - p.amount
    call.put(dataclasses.replace(credit, balance=balance, updated_at=call.now))
    call.credit(call.sender, p.amount)
    call.emit("credit.withdrawn", order_id=p.order_id, user=call.sender, amount=p.amount, balance=balance)


def settle_usage(call: Call, p: SettleUsage) -> None:
    """Charge a user's credit for tokens (capped at what is left): revenue shares first, the rest to the owner."""
    order = call.read.order(p.order_id)
    require_kind(order, INFERENCE, "billed")
    require_gateway(call, order, "settle its usage")
    credit = call.read.credit(p.order_id, p.user)
    charge = p.tokens * DeploymentTerms.of(order.params).price_per_1k_tokens // 1000
    capped = charge > credit.balance
    charge = min(charge, credit.balance)
    shared = 0
    for offer_id in order.content_offers:
        offer = call.read.offer(offer_id)
        if offer.pricing.model == REVENUE_SHARE:
            share = charge * offer.pricing.share_bps // MAX_SHARE_BPS
            shared += pay(call, order, offer.owner, share, f"revenue share of offer {offer_id}")
    pay(call, order, order.owner, charge - shared, f"usage of deployment {p.order_id}")
    call.put(
        dataclasses.replace(credit, balance=credit.balance - charge, spent=credit.spent + charge, updated_at=call.now)
    )
    call.emit(
        "usage.settled",
        order_id=p.order_id,
        user=p.user,
        tokens=p.tokens,
        charge=charge,
        capped=capped,
        receipts_digest=p.receipts_digest,
    )


HANDLERS: dict[type[Payload], Handler] = {
    RegisterEndpoint: register_endpoint,
    StopDeployment: stop_deployment,
    DepositCredit: deposit_credit,
    WithdrawCredit: withdraw_credit,
    SettleUsage: settle_usage,
}

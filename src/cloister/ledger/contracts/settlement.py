"""Paying out an order's escrow: what each offer earned for the time metered, the rest back to the owner.

An order may run on several machines one after another (``order.reassign``). Content offers are paid per hour
on the total usage; each compute provider is paid per hour for its own machine's share; fixed prices are paid
only when the order completes, to its content offers and its final compute offer. A reassignment only moves to
compute offers priced the same way at no more, so the escrow always covers the payments.
"""

from __future__ import annotations

from cloister.ledger.contracts.call import Call
from cloister.ledger.records import PER_HOUR, Offer, Order


def _pay(call: Call, order: Order, offer: Offer, usage: int, completed: bool) -> int:
    """Pay ``offer`` for ``usage`` seconds: per-hour always, fixed only on completion; returns the amount."""
    amount = offer.pricing.charge(usage, order.replicas) if completed or offer.pricing.model == PER_HOUR else 0
    if amount:
        call.credit(offer.owner, amount)
        call.emit(
            "payment",
            order_id=order.order_id,
            to=offer.owner,
            amount=amount,
            reason=f"{offer.kind} offer {offer.offer_id}",
        )
    return amount


def refund(call: Call, order: Order, amount: int) -> None:
    if amount:
        call.credit(order.owner, amount)
        call.emit("refund", order_id=order.order_id, to=order.owner, amount=amount)


def settle(call: Call, order: Order, final_usage: int, *, completed: bool) -> None:
    """Pay every offer for an order that ends now, ``final_usage`` seconds on its current machine after the
    ``order.usage_seconds`` of the machines it left; refund the rest of the escrow."""
    total = order.usage_seconds + final_usage
    paid = sum(_pay(call, order, call.read.offer(o), total, completed) for o in order.content_offers)
    for checkpoint in call.read.checkpoints(order.order_id):
        if checkpoint.released:
            paid += _pay(call, order, call.read.offer(checkpoint.compute_offer), checkpoint.usage_seconds, False)
    if order.compute_offer is not None:
        paid += _pay(call, order, call.read.offer(order.compute_offer), final_usage, completed)
    refund(call, order, order.escrow - paid)

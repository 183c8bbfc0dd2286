"""Paying out an order's escrow: what each offer earned for the time metered, the rest back to the owner.

An order may run on several machines, one after another (``order.reassign``) or side by side (the replicas of a
deployment). Content offers are paid per hour on the usage summed over every machine; each compute provider is
paid per hour for its own machine's share; fixed prices are paid only when the order completes, to its content
offers and the compute offers of the machines it ends on. A reassignment only moves to compute offers priced
the same way at no more, so the escrow always covers the payments.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloister.ledger.contracts.call import Call
from cloister.ledger.records import PER_HOUR, Offer, Order

Share = tuple[str, int]
"""(compute offer id, seconds) of one machine the order ends on."""


def pay(call: Call, order: Order, to: str, amount: int, reason: str) -> int:
    """Credit ``amount`` (if any) with a ``payment`` event; returns it."""
    if amount:
        call.credit(to, amount)
        call.emit("payment", order_id=order.order_id, to=to, amount=amount, reason=reason)
    return amount


def _pay_offer(call: Call, order: Order, offer: Offer, usage: int, completed: bool) -> int:
    """Pay ``offer`` for ``usage`` seconds: per-hour always, fixed only on completion; returns the amount."""
    amount = offer.pricing.charge(usage) if completed or offer.pricing.model == PER_HOUR else 0
    return pay(call, order, offer.owner, amount, f"{offer.kind} offer {offer.offer_id}")


def refund(call: Call, order: Order, amount: int) -> None:
    if amount:
        call.credit(order.owner, amount)
        call.emit("refund", order_id=order.order_id, to=order.owner, amount=amount)


def settle(call: Call, order: Order, current: Sequence[Share], *, completed: bool) -> int:
    """Pay every offer for an order that ends now on the machines of ``current`` after the
    ``order.usage_seconds`` of the machines it left; refund the rest of the escrow; returns the total usage."""
    total = order.usage_seconds + sum(seconds for _, seconds in current)
    paid = sum(_pay_offer(call, order, call.read.offer(o), total, completed) for o in order.content_offers)
    for checkpoint in call.read.checkpoints(order.order_id):
        if checkpoint.released:
            offer = call.read.offer(checkpoint.compute_offer)
            paid += _pay_offer(call, order, offer, checkpoint.usage_seconds, False)
    for offer_id, seconds in current:
        paid += _pay_offer(call, order, call.read.offer(offer_id), seconds, completed)
    refund(call, order, order.escrow - paid)
    return total

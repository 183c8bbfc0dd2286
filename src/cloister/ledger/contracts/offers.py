"""Offers: content (model, dataset, engine) and compute, created and retired by their owners."""

from __future__ import annotations

import dataclasses

from cloister.errors import InvalidState, NotAuthorized
from cloister.ledger.contracts.call import Call, Handler
from cloister.ledger.contracts.machines import active_machine
from cloister.ledger.records import OFFER_ID_PREFIX, Offer
from cloister.ledger.transactions import CreateOffer, Payload, RetireOffer


def create_offer(call: Call, p: CreateOffer) -> None:
    for machine_id in p.machine_ids:
        active_machine(call, machine_id)
    offer = Offer(
        offer_id=call.new_id(OFFER_ID_PREFIX),
        owner=call.sender,
        kind=p.kind,
        name=p.name,
        description=p.description,
        content_digest=p.content_digest,
        blob_uri=p.blob_uri,
        size=p.size,
        pricing=p.pricing,
        restrictions=p.restrictions,
        machine_ids=p.machine_ids,
        created_at=call.now,
        active=True,
    )
    call.put(offer)
    call.emit(
        "offer.created",
        offer_id=offer.offer_id,
        owner=offer.owner,
        kind=offer.kind,
        content_digest=offer.content_digest,
    )


def retire_offer(call: Call, p: RetireOffer) -> None:
    """Take an offer off the market; orders already using it carry on under its terms."""
    offer = call.read.offer(p.offer_id)
    if offer.owner != call.sender:
        raise NotAuthorized(f"offer {p.offer_id} belongs to {offer.owner}; only its owner can retire it")
    if not offer.active:
        raise InvalidState(f"offer {p.offer_id} is already retired; there is nothing to do")
    call.put(dataclasses.replace(offer, active=False))
    call.emit("offer.retired", offer_id=p.offer_id, owner=offer.owner)


HANDLERS: dict[type[Payload], Handler] = {CreateOffer: create_offer, RetireOffer: retire_offer}

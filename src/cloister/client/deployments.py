"""Deployments from the developer's and the end user's side: deploy a model (and adapters), fund, stop.

A deployment is an ``inference`` order: the ledger assigns N staked machines, every content owner's keeper
grants to each of them, and each replica registers its endpoint. The adapter a fine-tuning order produced is
re-published by its owner as a private model offer that only the inference engine may read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cloister.client.sdk import Client, _created_id
from cloister.consensus.modes import parse_mode
from cloister.engines.bundle import builtin_engine, bundle_digest
from cloister.errors import ConfigError, RecordNotFound
from cloister.ledger.records import ENGINE, INFERENCE, PENDING_GRANTS, Offer, Order, Pricing, Restrictions
from cloister.ledger.transactions import CancelOrder, CreateOrder, DepositCredit, StopDeployment, WithdrawCredit
from cloister.runtime.archive import pack_folder

INFERENCE_ENGINE = "chat_inference"


def inference_engine_offer(client: Client, offer_id: str | None = None) -> Offer:
    """The engine offer to deploy with: ``offer_id``, or the active offer of the built-in inference engine."""
    if offer_id is not None:
        offer = client.ledger.offer(offer_id)
        if offer.kind != ENGINE:
            raise ConfigError(
                f"offer {offer_id} is a {offer.kind} offer, not an engine; name an engine offer with --engine "
                f"(or leave it out to use the built-in {INFERENCE_ENGINE})"
            )
        return offer
    digest = bundle_digest(builtin_engine(INFERENCE_ENGINE))
    offers = [o for o in client.ledger.offers(kind=ENGINE, content_digest=digest) if o.active]
    if not offers:
        raise RecordNotFound(
            f"no active offer publishes the built-in {INFERENCE_ENGINE} engine ({digest}); publish it with "
            f"`cloister engine publish {INFERENCE_ENGINE}` or name an engine offer with --engine"
        )
    return min(offers, key=lambda offer: offer.created_at)


def publish_adapter(client: Client, adapter: Path, *, engine_digest: str, name: str = "adapter") -> Offer:
    """Publish a LoRA adapter folder as a free model offer that only ``engine_digest`` may read.

    The folder travels as a deterministic tar (the loader unpacks ``….tar`` inputs into folders), so the same
    adapter always has the same digest.
    """
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter} holds no adapter_config.json; point at the adapter folder of an order result")
    with client._scratch() as scratch:
        archive = scratch / f"{name}.tar"
        pack_folder(adapter, archive)
        return client.publish(
            "model",
            archive,
            name=archive.name,
            description="LoRA adapter, private to its owner's deployments",
            pricing=Pricing("free", 0, 0),
            restrictions=Restrictions(engine_digests=(engine_digest,)),
        )


def deploy(
    client: Client,
    *,
    model: str,
    adapters: Sequence[str] = (),
    engine: str,
    replicas: int,
    gateway: str,
    price_per_1k_tokens: int = 0,
    consensus: str | None = None,
    lease_hours: int = 1,
    deposit: int,
    params: dict[str, Any] | None = None,
) -> Order:
    """Escrow ``deposit`` and create a deployment of ``model`` (+ ``adapters``) on ``replicas`` machines."""
    terms: dict[str, Any] = {**(params or {}), "price_per_1k_tokens": price_per_1k_tokens, "gateway": gateway}
    if consensus is not None:
        terms["consensus"] = str(parse_mode(consensus))
    payload = CreateOrder(
        INFERENCE, model, (), engine, None, terms, lease_hours, replicas, deposit, adapter_offers=tuple(adapters)
    )
    receipt = client.wallet.send(payload)
    return client.ledger.order(_created_id(receipt, "order.created", "order_id"))


def fund_deployment(client: Client, order_id: str, amount: int) -> int:
    """Move ``amount`` of the caller's balance into credit for ``order_id``; returns the new credit balance."""
    client.wallet.send(DepositCredit(order_id, amount))
    return client.ledger.credit(order_id, client.address).balance


def withdraw_credit(client: Client, order_id: str, amount: int | None = None) -> int:
    """Take back unspent credit of a stopped deployment (all of it by default); returns the amount."""
    left = client.ledger.credit(order_id, client.address).balance
    amount = left if amount is None else amount
    if amount > 0:
        client.wallet.send(WithdrawCredit(order_id, amount))
    return amount


def stop_deployment(client: Client, order_id: str) -> Order:
    """End a deployment: providers and per-hour owners are paid for the serving seconds, the rest refunded.

    One still waiting for grants never served: it is cancelled, which refunds the whole deposit.
    """
    order = client.ledger.order(order_id)
    if order.kind == INFERENCE and order.state == PENDING_GRANTS:
        client.wallet.send(CancelOrder(order_id))
    else:
        client.wallet.send(StopDeployment(order_id))
    return client.ledger.order(order_id)

"""The keeper refuses what its owner's policy does not accept; the order then waits and nothing is decrypted."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.node.market import ANY, Market, make_market, order_params

from cloister.client.orders import create_order
from cloister.crypto.digest import digest_bytes
from cloister.errors import RestrictionViolated
from cloister.ledger.genesis import UNITS_PER_TOKEN
from cloister.ledger.records import PENDING_GRANTS, READY, Offer, Restrictions

OTHER_ENGINE = digest_bytes(b"another engine")


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    built = make_market(tmp_path)
    yield built
    built.ledger.close()


def _offers(market: Market, restrictions: Restrictions = ANY) -> list[Offer]:
    model_owner, clinic, author = market.party("model"), market.party("clinic"), market.party("author")
    market.party("developer")
    return [
        market.publish_model(model_owner),
        market.publish_dataset(clinic, "clinic", restrictions),
        market.publish_engine(author),
    ]


def _order(market: Market, offers: list[Offer]) -> str:
    order = create_order(
        market.clients["developer"],
        model=offers[0].offer_id,
        datasets=[offers[1].offer_id],
        engine=offers[2].offer_id,
        params=order_params(),
        lease_hours=1,
        deposit=100 * UNITS_PER_TOKEN,
    )
    return order.order_id


def test_the_chain_refuses_an_order_whose_engine_an_offer_does_not_allow(market: Market) -> None:
    market.node("provider")
    offers = _offers(market, Restrictions(engine_digests=(OTHER_ENGINE,)))
    with pytest.raises(RestrictionViolated):
        _order(market, offers)


def test_keeper_refuses_an_engine_its_owner_does_not_allow_and_the_order_waits(market: Market) -> None:
    node = market.node("provider")
    order_id = _order(market, _offers(market))
    clinic = dataclasses.replace(market.keeper("clinic"), allowed_engines=frozenset({OTHER_ENGINE}))
    (refusal,) = clinic.run_once()
    assert not refusal.granted and "allows only engines" in refusal.reason
    assert clinic.run_once() == [], "a decision is made once"
    for name in ("model", "author"):
        assert all(d.granted for d in market.keeper(name).run_once())
    assert market.ledger.order(order_id).state == PENDING_GRANTS
    assert node.run_ready() == [], "nothing ran"
    assert not (node.folder / "work" / order_id).exists(), "nothing was decrypted"


def test_keeper_refuses_a_debuggable_machine_the_network_admitted(market: Market) -> None:
    node = market.node("provider", debug=True)
    order_id = _order(market, _offers(market))
    decisions = market.keeper("clinic").run_once()
    assert [d.granted for d in decisions] == [False]
    assert "debug" in decisions[0].reason
    assert market.ledger.order(order_id).machines == (node.machine_id,)
    assert market.ledger.order(order_id).state == PENDING_GRANTS


def test_keeper_grants_only_its_own_offers_and_the_order_becomes_ready(market: Market) -> None:
    market.node("provider")
    offers = _offers(market)
    order_id = _order(market, offers)
    decisions = market.keeper("clinic").run_once()
    assert [(d.offer_id, d.granted) for d in decisions] == [(offers[1].offer_id, True)]
    for name in ("model", "author"):
        market.keeper(name).run_once()
    assert market.ledger.order(order_id).state == READY
    assert market.keeper("clinic").run_once() == [], "no longer pending"

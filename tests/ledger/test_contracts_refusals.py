"""Key refusals (``grant.refuse``) on every backend: who may refuse, what is recorded, what the order does."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.ledger.test_contracts import Market, attrs

from cloister.errors import InvalidState, InvalidTransaction, NotAuthorized, RecordExists, RecordNotFound
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.evm.ledger import EvmLedger
from cloister.ledger.protocol import Ledger
from cloister.ledger.records import MAX_REASON, Refusal
from cloister.ledger.transactions import CancelOrder, PostGrant, RefuseGrant
from cloister.ledger.verify import verify_ledger
from cloister.ledger.wallet import Wallet


@pytest.fixture
def market(ledger: Ledger, make_wallet: Callable[..., Wallet]) -> Market:
    return Market(ledger, make_wallet)


def test_a_refusal_is_recorded_and_the_order_keeps_waiting(
    market: Market, ledger: Ledger, embedded: EmbeddedLedger
) -> None:
    model, dataset, engine = market.basic()
    order_id, _ = market.order(model, (dataset,), engine)
    machine = ledger.order(order_id).machines[0]
    assert ledger.refusals(order_id) == []
    reason = "TCB debug flag set; " + "é" * (MAX_REASON - 20)
    receipt = market.owners[dataset].send(RefuseGrant(order_id, dataset, machine, reason))
    assert attrs(receipt, "grant.refused") == {
        "order_id": order_id,
        "offer_id": dataset,
        "machine_id": machine,
        "reason": reason,
    }
    now = ledger.head().time
    assert ledger.refusals(order_id) == [
        Refusal(order_id, dataset, machine, market.owners[dataset].address, reason, now)
    ]
    assert ledger.order(order_id).state == "pending_grants"
    with pytest.raises(RecordExists, match="already refused"):
        market.owners[dataset].send(RefuseGrant(order_id, dataset, machine, "again"))
    # The developer walks away with a full refund; nothing can be refused on a closed order.
    before = ledger.account(market.developer.address).balance
    market.owners[model].send(PostGrant(order_id, model, machine, b"k"))
    market.developer.send(CancelOrder(order_id))
    assert ledger.account(market.developer.address).balance == before + ledger.order(order_id).deposit
    with pytest.raises(InvalidState, match="is cancelled"):
        market.owners[engine].send(RefuseGrant(order_id, engine, machine, "too late"))
    assert len(ledger.refusals(order_id)) == 1
    if not isinstance(ledger, EvmLedger):  # the embedded log replays, refusals included, to the same head
        assert verify_ledger(embedded.path).height == ledger.head().height


def test_a_refusing_owner_may_still_grant_but_a_grant_cannot_be_refused(market: Market, ledger: Ledger) -> None:
    model, dataset, engine = market.basic()
    order_id, _ = market.order(model, (dataset,), engine)
    machine = ledger.order(order_id).machines[0]
    market.owners[model].send(RefuseGrant(order_id, model, machine, "waiting for manual approval"))
    market.owners[model].send(PostGrant(order_id, model, machine, b"k"))
    market.owners[dataset].send(PostGrant(order_id, dataset, machine, b"k"))
    with pytest.raises(InvalidState, match="already granted"):
        market.owners[dataset].send(RefuseGrant(order_id, dataset, machine, "changed my mind"))
    market.owners[engine].send(PostGrant(order_id, engine, machine, b"k"))
    assert ledger.order(order_id).state == "ready"
    assert [r.offer_id for r in ledger.refusals(order_id)] == [model]


def test_only_an_offer_owner_refuses_for_an_assigned_machine(market: Market, ledger: Ledger) -> None:
    model, dataset, engine = market.basic()
    order_id, _ = market.order(model, (dataset,), engine)
    machine = ledger.order(order_id).machines[0]
    stranger_offer = market.content("dataset")
    head = ledger.head()
    with pytest.raises(NotAuthorized, match="only its owner"):
        market.owners[dataset].send(RefuseGrant(order_id, model, machine, "not mine"))
    with pytest.raises(NotAuthorized, match="not part of order"):
        market.owners[stranger_offer].send(RefuseGrant(order_id, stranger_offer, machine, "no"))
    with pytest.raises(NotAuthorized, match="not assigned"):
        market.owners[model].send(RefuseGrant(order_id, model, market.machine(), "no"))
    with pytest.raises(RecordNotFound):
        market.owners[model].send(RefuseGrant("or-0000000000000000", model, machine, "no"))
    with pytest.raises(InvalidTransaction, match="reason"):
        market.owners[model].send(RefuseGrant(order_id, model, machine, "r" * (MAX_REASON + 1)))
    with pytest.raises(RecordNotFound):
        ledger.refusals("or-0000000000000000")
    assert ledger.refusals(order_id) == []
    assert ledger.head().height == head.height + 2  # only the extra machine's challenge and registration

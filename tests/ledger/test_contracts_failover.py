"""Fail-over (``order.checkpoint``, ``order.reassign``) on every backend: who may act, when, and who is paid."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from tests.ledger.test_contracts import DELIVERY, MANIFEST, REPORT, Market, attrs

from cloister.errors import InvalidState, NotAuthorized, RecordExists, RecordNotFound
from cloister.ledger.contracts.failover import NO_MACHINE_LEFT
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.evm.ledger import EvmLedger
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.records import Checkpoint, Pricing, ResumeGrant
from cloister.ledger.transactions import (
    CancelOrder,
    CompleteOrder,
    Heartbeat,
    PostResumeGrant,
    ReassignOrder,
    RecordCheckpoint,
    StartOrder,
)
from cloister.ledger.verify import verify_ledger
from cloister.ledger.wallet import Wallet

CKPT = "sha256:" + "c1" * 32
NOTICE = "file:///blobs/notice"
TIMEOUT = 120  # the suite's heartbeat_timeout


@pytest.fixture
def market(ledger: Ledger, make_wallet: Callable[..., Wallet]) -> Market:
    return Market(ledger, make_wallet)


class Setup:
    """Machine ``a`` (acme, 3 units/h) takes the order; machine ``b`` (rival, 2 units/h) may take it over."""

    def __init__(self, market: Market, rival_price: int = 2_000_000) -> None:
        self.market = market
        self.rival = market.new_provider("rival")
        self.a = market.machine()
        self.b = market.machine(self.rival)
        self.compute_a = market.compute(self.a, pricing=Pricing("per_hour", 3_000_000, 0))
        self.compute_b = market.compute(self.b, pricing=Pricing("per_hour", rival_price, 0), provider=self.rival)
        self.model = market.content("model", Pricing("per_hour", 2_000_000, 0))
        self.dataset = market.content("dataset", Pricing("fixed", 500_000, 0))
        self.engine = market.content("engine")
        # required: model 2/h * 4h + dataset 0.5 fixed + compute 3/h * 4h = 20.5
        self.order_id, _ = market.order(
            self.model, (self.dataset,), self.engine, compute=self.compute_a, lease_hours=4, deposit=25_000_000
        )

    def balances(self) -> dict[str, int]:
        wallets = {
            "model": self.market.owners[self.model],
            "dataset": self.market.owners[self.dataset],
            "acme": self.market.provider,
            "rival": self.rival,
            "developer": self.market.developer,
        }
        return {name: self.market.ledger.account(w.address).balance for name, w in wallets.items()}


def _payments(receipt: TxReceipt) -> list[tuple[str, int]]:
    return sorted((e.attrs["to"], e.attrs["amount"]) for e in receipt.events if e.kind == "payment")


def test_a_dead_machine_is_replaced_and_each_provider_is_paid_its_share(
    market: Market, ledger: Ledger, embedded: EmbeddedLedger, clock: Any
) -> None:
    s = Setup(market)
    order_id = s.order_id
    assert market.running(order_id) == s.a
    with pytest.raises(InvalidState, match="reassigned only after"):
        market.developer.send(ReassignOrder(order_id, s.a))
    clock.advance(1800)
    market.provider.send(Heartbeat(s.a))
    receipt = market.provider.send(RecordCheckpoint(order_id, s.a, 1, 1800, CKPT, NOTICE))
    assert attrs(receipt, "order.checkpointed") == {
        "order_id": order_id,
        "machine_id": s.a,
        "step": 1,
        "usage_seconds": 1800,
        "checkpoint_digest": CKPT,
        "notice_uri": NOTICE,
    }
    assert ledger.checkpoints(order_id) == [
        Checkpoint(order_id, s.a, s.compute_a, 1, 1800, CKPT, False, clock.now, NOTICE)
    ]
    with pytest.raises(InvalidState, match="later step"):  # a replayed checkpoint
        market.provider.send(RecordCheckpoint(order_id, s.a, 1, 1800, CKPT, NOTICE))
    with pytest.raises(InvalidState, match="no less usage"):
        market.provider.send(RecordCheckpoint(order_id, s.a, 2, 1799, CKPT, NOTICE))
    with pytest.raises(NotAuthorized, match="provider"):
        s.rival.send(RecordCheckpoint(order_id, s.a, 2, 1900, CKPT, NOTICE))

    clock.advance(TIMEOUT + 1)
    s.rival.send(Heartbeat(s.b))
    before = s.balances()
    receipt = market.developer.send(ReassignOrder(order_id, s.a))  # anyone may send it
    assert attrs(receipt, "order.reassigned") == {"order_id": order_id, "from": s.a, "to": s.b}
    order = ledger.order(order_id)
    assert (order.state, order.machines, order.compute_offer, order.usage_seconds, order.escrow) == (
        "pending_grants",
        (s.b,),
        s.compute_b,
        1800,
        25_000_000,
    )
    assert ledger.grants(order_id) == []  # the keys sealed to the dead machine are void
    assert ledger.checkpoints(order_id) == [
        Checkpoint(order_id, s.a, s.compute_a, 1, 1800, CKPT, True, clock.now, NOTICE)
    ]
    assert ledger.orders(machine_id=s.a) == []
    with pytest.raises(NotAuthorized, match="not assigned"):
        market.provider.send(RecordCheckpoint(order_id, s.a, 2, 1900, CKPT, NOTICE))
    with pytest.raises(NotAuthorized, match="not assigned"):
        market.developer.send(ReassignOrder(order_id, s.a))

    # The new machine gets its own grants (the keeper re-grants), starts, checkpoints and completes.
    assert market.grant_all(order_id)[-1].events[-1].kind == "order.ready"
    assert {g.machine_id for g in ledger.grants(order_id)} == {s.b}
    with pytest.raises(InvalidState, match="only be checkpointed when running"):
        s.rival.send(RecordCheckpoint(order_id, s.b, 1, 0, CKPT, NOTICE))
    s.rival.send(StartOrder(order_id, s.b))
    s.rival.send(RecordCheckpoint(order_id, s.b, 2, 600, CKPT, NOTICE))
    receipt = s.rival.send(CompleteOrder(order_id, s.b, 99_999, REPORT, MANIFEST, DELIVERY))
    # The final machine is capped by what is left of the 4 h lease: 14400 - 1800 = 12600 s, 14400 s in all.
    # model 2/h * 4h = 8; dataset fixed 0.5; acme 3/h * 0.5h = 1.5; rival 2/h * 3.5h = 7; refund 25 - 17 = 8.
    assert _payments(receipt) == sorted(
        [
            (market.owners[s.model].address, 8_000_000),
            (market.owners[s.dataset].address, 500_000),
            (market.provider.address, 1_500_000),
            (s.rival.address, 7_000_000),
        ]
    )
    after = s.balances()
    assert {k: after[k] - before[k] for k in after} == {
        "model": 8_000_000,
        "dataset": 500_000,
        "acme": 1_500_000,
        "rival": 7_000_000,
        "developer": 8_000_000,
    }
    assert attrs(receipt, "order.completed")["usage_seconds"] == 14_400
    order = ledger.order(order_id)
    assert (order.state, order.usage_seconds, order.escrow) == ("completed", 14_400, 0)
    if not isinstance(ledger, EvmLedger):  # the embedded log replays, fail-over included, to the same head
        assert verify_ledger(embedded.path).height == ledger.head().height


def test_with_no_machine_left_the_order_fails_and_pays_only_the_time_used(
    market: Market, ledger: Ledger, clock: Any
) -> None:
    s = Setup(market, rival_price=4_000_000)  # dearer than the order's compute offer: not a candidate
    order_id = s.order_id
    market.running(order_id)
    clock.advance(7200)
    market.provider.send(RecordCheckpoint(order_id, s.a, 5, 7200, CKPT, NOTICE))
    clock.advance(TIMEOUT + 1)
    s.rival.send(Heartbeat(s.b))
    before = s.balances()
    receipt = s.rival.send(ReassignOrder(order_id, s.a))
    failed = {"order_id": order_id, "machine_id": s.a, "reason": NO_MACHINE_LEFT, "delivery_uri": None}
    assert attrs(receipt, "order.failed") == failed
    # Per-hour prices for the 2 h used (model 4, acme 6), no fixed price; the other 15 go back.
    assert _payments(receipt) == sorted(
        [(market.owners[s.model].address, 4_000_000), (market.provider.address, 6_000_000)]
    )
    after = s.balances()
    assert {k: after[k] - before[k] for k in after} == {
        "model": 4_000_000,
        "dataset": 0,
        "acme": 6_000_000,
        "rival": 0,
        "developer": 15_000_000,
    }
    order = ledger.order(order_id)
    assert (order.state, order.usage_seconds, order.escrow, order.failure_reason) == (
        "failed",
        7200,
        0,
        NO_MACHINE_LEFT,
    )
    with pytest.raises(InvalidState, match="is failed"):
        s.rival.send(ReassignOrder(order_id, s.a))


def test_a_machine_already_tried_is_not_drawn_again(market: Market, ledger: Ledger, clock: Any) -> None:
    s = Setup(market)
    order_id = s.order_id
    with pytest.raises(InvalidState, match="only be checkpointed when running"):
        market.provider.send(RecordCheckpoint(order_id, s.a, 1, 0, CKPT, NOTICE))
    clock.advance(TIMEOUT + 1)
    s.rival.send(Heartbeat(s.b))
    market.developer.send(ReassignOrder(order_id, s.a))  # never started: nothing metered, nothing to pay
    assert ledger.checkpoints(order_id) == [Checkpoint(order_id, s.a, s.compute_a, 0, 0, None, True, clock.now)]
    assert ledger.order(order_id).machines == (s.b,)
    clock.advance(TIMEOUT + 1)
    market.provider.send(Heartbeat(s.a))  # a is back, but it was tried for this order already
    before = s.balances()
    receipt = market.provider.send(ReassignOrder(order_id, s.b))
    assert attrs(receipt, "order.failed")["reason"] == NO_MACHINE_LEFT
    assert _payments(receipt) == []
    assert s.balances()["developer"] == before["developer"] + 25_000_000
    assert [(c.machine_id, c.released) for c in ledger.checkpoints(order_id)] == sorted([(s.a, True), (s.b, True)])


def test_cancelling_after_a_fail_over_still_pays_the_dead_machine(market: Market, ledger: Ledger, clock: Any) -> None:
    s = Setup(market)
    order_id = s.order_id
    market.running(order_id)
    market.provider.send(RecordCheckpoint(order_id, s.a, 1, 3600, CKPT, NOTICE))
    clock.advance(TIMEOUT + 1)
    s.rival.send(Heartbeat(s.b))
    market.developer.send(ReassignOrder(order_id, s.a))
    before = s.balances()
    receipt = market.developer.send(CancelOrder(order_id))
    after = s.balances()
    assert {k: after[k] - before[k] for k in after} == {
        "model": 2_000_000,
        "dataset": 0,
        "acme": 3_000_000,
        "rival": 0,
        "developer": 20_000_000,
    }
    assert attrs(receipt, "order.cancelled") == {"order_id": order_id}


def test_unknown_orders_and_machines_are_refused(market: Market, ledger: Ledger) -> None:
    s = Setup(market)
    with pytest.raises(RecordNotFound):
        market.developer.send(ReassignOrder("or-0000000000000000", s.a))
    with pytest.raises(RecordNotFound):
        ledger.checkpoints("or-0000000000000000")
    with pytest.raises(NotAuthorized, match="not assigned"):
        market.developer.send(ReassignOrder(s.order_id, s.b))
    with pytest.raises(NotAuthorized, match="not assigned"):
        s.rival.send(RecordCheckpoint(s.order_id, s.b, 1, 0, CKPT, NOTICE))
    assert ledger.checkpoints(s.order_id) == []


def test_the_owner_hands_the_latest_checkpoint_to_the_machine_that_takes_over(
    market: Market, ledger: Ledger, clock: Any
) -> None:
    s = Setup(market)
    order_id = s.order_id
    market.running(order_id)
    market.provider.send(RecordCheckpoint(order_id, s.a, 1, 600, CKPT, NOTICE))
    later = "sha256:" + "c3" * 32
    market.provider.send(RecordCheckpoint(order_id, s.a, 3, 1200, later, NOTICE + "-3"))
    grant = PostResumeGrant(order_id, s.b, b"checkpoint key sealed to b")
    with pytest.raises(InvalidState, match="resume grant when pending_grants or ready"):
        market.developer.send(dataclasses.replace(grant, machine_id=s.a))
    clock.advance(TIMEOUT + 1)
    s.rival.send(Heartbeat(s.b))
    market.developer.send(ReassignOrder(order_id, s.a))
    with pytest.raises(NotAuthorized, match="only its owner"):
        s.rival.send(grant)
    with pytest.raises(NotAuthorized, match="not assigned"):
        market.developer.send(dataclasses.replace(grant, machine_id=s.a))
    receipt = market.developer.send(grant)
    assert attrs(receipt, "order.resume_granted") == {
        "order_id": order_id,
        "machine_id": s.b,
        "checkpoint_digest": later,
    }
    assert ledger.resume_grants(order_id) == [ResumeGrant(order_id, s.b, later, grant.sealed_key, clock.now)]
    (released,) = ledger.checkpoints(order_id)
    assert (released.step, released.notice_uri, released.released) == (3, NOTICE + "-3", True)
    with pytest.raises(RecordExists, match="already holds a resume grant"):
        market.developer.send(grant)


def test_there_is_no_resume_grant_without_a_checkpoint(market: Market, ledger: Ledger, clock: Any) -> None:
    s = Setup(market)
    clock.advance(TIMEOUT + 1)
    s.rival.send(Heartbeat(s.b))
    market.developer.send(ReassignOrder(s.order_id, s.a))  # never started: no checkpoint to resume from
    with pytest.raises(InvalidState, match="nothing to resume from"):
        market.developer.send(PostResumeGrant(s.order_id, s.b, b"k"))
    assert ledger.resume_grants(s.order_id) == []
    with pytest.raises(RecordNotFound):
        ledger.resume_grants("or-0000000000000000")

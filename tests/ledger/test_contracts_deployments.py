"""Deployments (inference orders) on every backend: staked assignment, endpoints, stop and pay by serving
seconds, replacement of a silent replica, credits and token billing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from tests.ledger.deployed import DEPLOYMENT_KEY, STAKE, Fleet, signed
from tests.ledger.test_contracts import Market, attrs

from cloister.errors import (
    InsufficientFunds,
    InvalidState,
    InvalidTransaction,
    NoEligibleMachine,
    NonceMismatch,
    NotAuthorized,
    RecordNotFound,
)
from cloister.ledger.contracts.failover import NO_MACHINE_LEFT
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.records import Credit, Endpoint, Pricing
from cloister.ledger.transactions import (
    CancelOrder,
    CompleteOrder,
    DepositCredit,
    FailOrder,
    PostResumeGrant,
    ReassignOrder,
    RecordCheckpoint,
    SettleUsage,
    StartOrder,
    StopDeployment,
    WithdrawCredit,
    WithdrawStake,
)
from cloister.ledger.wallet import Wallet

HOUR = 3600
TIMEOUT = 120  # the suite's heartbeat_timeout
RECEIPTS = "sha256:" + "4c" * 32


@pytest.fixture
def market(ledger: Ledger, make_wallet: Callable[..., Wallet]) -> Market:
    return Market(ledger, make_wallet)


@pytest.fixture
def fleet(market: Market) -> Fleet:
    return Fleet(market)


def _payments(receipt: TxReceipt) -> dict[str, int]:
    paid: dict[str, int] = {}
    for event in receipt.events:
        if event.kind == "payment":
            paid[event.attrs["to"]] = paid.get(event.attrs["to"], 0) + event.attrs["amount"]
    return paid


def _per_hour(amount: int) -> Pricing:
    return Pricing("per_hour", amount, 0)


# --- assignment ----------------------------------------------------------------------------------------------


def test_only_providers_holding_the_serving_stake_are_assigned(fleet: Fleet, market: Market, ledger: Ledger) -> None:
    staked = [fleet.replica(), fleet.replica()]
    fleet.replica(stake=0)
    fleet.replica(stake=STAKE // 2 - 1)  # one unit short of the genesis' 50 tokens
    order_id = fleet.deploy(2)
    order = ledger.order(order_id)
    assert (order.kind, order.state, order.replicas) == ("inference", "pending_grants", 2)
    assert sorted(order.machines) == sorted(r.machine_id for r in staked)
    # Each replica keeps its own compute offer, in a seat that will record what it served.
    seats = {(c.machine_id, c.compute_offer, c.usage_seconds, c.released) for c in ledger.checkpoints(order_id)}
    assert seats == {(r.machine_id, r.compute_offer, 0, False) for r in staked}
    with pytest.raises(NoEligibleMachine, match="provider stake below 50000000") as caught:
        fleet.deploy(1)  # the staked machines are busy now
    assert caught.value.details["refusals"] == {"busy with another order": 2, "provider stake below 50000000": 2}
    # A fine-tune does not need the serving stake: the unstaked machines take it.
    dataset = market.content("dataset")
    market.order(fleet.model, (dataset,), fleet.engine)


def test_deployment_terms_are_checked(fleet: Fleet, market: Market) -> None:
    fleet.replica(_per_hour(3_000_000))
    fleet.replica(_per_hour(1_000_000))
    with pytest.raises(InvalidTransaction, match="at most 16 replicas"):
        market.developer.send(fleet.create(17))
    with pytest.raises(InvalidTransaction, match=r"params\.consensus"):
        market.developer.send(fleet.create(1, params=fleet.params(consensus="sampling:0")))
    with pytest.raises(InvalidTransaction, match="not a model offer"):
        market.developer.send(fleet.create(1, adapters=(fleet.engine,)))
    shared = market.content("model", Pricing("revenue_share", 0, 6000))
    adapter = market.content("model", Pricing("revenue_share", 0, 5000))
    with pytest.raises(InvalidTransaction, match="11000 basis points"):
        market.developer.send(fleet.create(1, model=shared, adapters=(adapter,)))
    priced = market.content("model", _per_hour(1_000_000))
    # model 1/h * 2 h * 2 replicas = 4, plus each machine's own price for the lease: 3 * 2 + 1 * 2 = 8
    with pytest.raises(InsufficientFunds) as caught:
        market.developer.send(fleet.create(2, model=priced, lease_hours=2, deposit=11_999_999))
    assert caught.value.details["required"] == 12_000_000
    receipt = market.developer.send(fleet.create(2, model=priced, lease_hours=2, deposit=12_000_000))
    assert attrs(receipt, "order.created")["required"] == 12_000_000


# --- endpoints -----------------------------------------------------------------------------------------------


def test_replicas_publish_one_deployment_key_once_their_keys_are_granted(
    fleet: Fleet, ledger: Ledger, clock: Any
) -> None:
    a, b = fleet.replica(), fleet.replica()
    order_id = fleet.deploy(2)
    outsider = fleet.replica()
    with pytest.raises(InvalidState, match="only be given endpoints when ready or running"):
        fleet.publish(order_id, a.machine_id)
    fleet.grant_missing(order_id)
    assert ledger.order(order_id).state == "ready"
    with pytest.raises(NotAuthorized, match="belongs to provider"):
        b.provider.send(fleet.endpoint(order_id, a.machine_id))
    with pytest.raises(NotAuthorized, match="not assigned"):
        fleet.publish(order_id, outsider.machine_id)
    with pytest.raises(InvalidTransaction, match=r"key_signature.*not signed by its loader"):
        fleet.publish(order_id, a.machine_id, signer=b.loader)
    honest = fleet.endpoint(order_id, a.machine_id)
    with pytest.raises(InvalidTransaction, match="key_signature"):  # signed for another URL
        a.provider.send(dataclasses.replace(honest, url="http://attacker.example:1"))
    assert ledger.endpoints(order_id) == []

    clock.advance(60)
    receipt = fleet.publish(order_id, a.machine_id, url="http://127.0.0.1:9001")
    assert attrs(receipt, "deployment.endpoint") == {
        "order_id": order_id,
        "machine_id": a.machine_id,
        "url": "http://127.0.0.1:9001",
        "deployment_key": DEPLOYMENT_KEY.hex(),
    }
    order = ledger.order(order_id)
    assert (order.state, order.started_at) == ("running", clock.now)
    with pytest.raises(InvalidState, match="deployment key"):
        fleet.publish(order_id, b.machine_id, key=b"\x08" * 32)
    clock.advance(60)
    at_b = fleet.endpoint(order_id, b.machine_id, url="https://b.example/v1")
    b.provider.send(at_b)
    clock.advance(60)
    moved = fleet.endpoint(order_id, a.machine_id, url="http://127.0.0.1:9011")
    a.provider.send(moved)  # a new URL; the replica has served since it first registered
    assert sorted(ledger.endpoints(order_id), key=lambda e: e.machine_id) == sorted(
        [
            Endpoint(order_id, a.machine_id, moved.url, DEPLOYMENT_KEY, moved.key_signature, clock.now - 120, None),
            Endpoint(order_id, b.machine_id, at_b.url, DEPLOYMENT_KEY, at_b.key_signature, clock.now - 60, None),
        ],
        key=lambda e: e.machine_id,
    )
    assert ledger.order(order_id).started_at == clock.now - 120
    with pytest.raises(RecordNotFound):
        ledger.endpoints("or-0000000000000000")


def test_fine_tunes_and_deployments_take_only_their_own_transactions(fleet: Fleet, market: Market) -> None:
    a = fleet.replica()
    deployment = fleet.deploy(1)
    finetune, _ = market.order(*_finetune_offers(market))
    with pytest.raises(InvalidTransaction, match="only inference orders"):
        market.developer.send(StopDeployment(finetune))
    with pytest.raises(InvalidTransaction, match="only inference orders"):
        market.developer.send(DepositCredit(finetune, 1))
    with pytest.raises(InvalidTransaction, match="only inference orders"):
        a.provider.send(fleet.endpoint(finetune, a.machine_id))
    fleet.serve(deployment)
    for payload in (
        StartOrder(deployment, a.machine_id),
        CompleteOrder(deployment, a.machine_id, 1, RECEIPTS, None, "file:///d"),
        FailOrder(deployment, a.machine_id, "bored", None),
        RecordCheckpoint(deployment, a.machine_id, 1, 1, RECEIPTS, "file:///n"),
        PostResumeGrant(deployment, a.machine_id, b"k"),
    ):
        with pytest.raises(InvalidTransaction, match="only finetune orders"):
            a.provider.send(payload)


def _finetune_offers(market: Market) -> tuple[str, tuple[str, ...], str]:
    model, dataset, engine = market.basic()
    return model, (dataset,), engine


# --- stopping and paying by the second -----------------------------------------------------------------------


def test_stop_pays_each_machine_for_the_seconds_it_served(
    fleet: Fleet, market: Market, ledger: Ledger, clock: Any
) -> None:
    a = fleet.replica(_per_hour(3_600_000))
    b = fleet.replica(_per_hour(1_800_000))
    model = market.content("model", _per_hour(2_000_000))
    engine = market.content("engine", Pricing("fixed", 500_000, 0))
    # model 2/h * 2 h * 2 = 8, engine 0.5, a 3.6 * 2 = 7.2, b 1.8 * 2 = 3.6: 19.3 tokens
    order_id = fleet.deploy(2, model=model, engine=engine, lease_hours=2, deposit=20_000_000)
    with pytest.raises(InvalidState, match="cancel it instead"):
        market.developer.send(StopDeployment(order_id))
    fleet.grant_missing(order_id)
    fleet.publish(order_id, a.machine_id)
    clock.advance(600)
    fleet.publish(order_id, b.machine_id)
    clock.advance(3000)
    with pytest.raises(NotAuthorized, match="only its owner"):
        fleet.gateway.send(StopDeployment(order_id))
    developer = fleet.balance(market.developer)
    receipt = market.developer.send(StopDeployment(order_id))
    # a served 3600 s (3.6), b 3000 s (1.5), 6600 s in all: model 2/h -> 3.666666; engine fixed 0.5
    assert _payments(receipt) == {
        a.provider.address: 3_600_000,
        b.provider.address: 1_500_000,
        market.owners[model].address: 3_666_666,
        market.owners[engine].address: 500_000,
    }
    assert attrs(receipt, "refund")["amount"] == 20_000_000 - 9_266_666
    assert attrs(receipt, "deployment.stopped") == {"order_id": order_id, "serving_seconds": 6600}
    assert fleet.balance(market.developer) == developer + 10_733_334
    order = ledger.order(order_id)
    assert (order.state, order.escrow, order.usage_seconds, order.ended_at) == ("completed", 0, 6600, clock.now)
    assert {e.removed_at for e in ledger.endpoints(order_id)} == {clock.now}
    with pytest.raises(InvalidState, match="only be stopped"):
        market.developer.send(StopDeployment(order_id))
    with pytest.raises(InvalidState):
        fleet.publish(order_id, a.machine_id)


def test_serving_is_paid_only_within_the_lease(fleet: Fleet, market: Market, clock: Any) -> None:
    a = fleet.replica(_per_hour(3_600_000))
    order_id = fleet.deploy(1, lease_hours=1, deposit=3_600_000)
    fleet.serve(order_id)
    clock.advance(5 * HOUR)
    receipt = market.developer.send(StopDeployment(order_id))
    assert _payments(receipt) == {a.provider.address: 3_600_000}
    assert attrs(receipt, "deployment.stopped")["serving_seconds"] == HOUR


def test_a_cancelled_deployment_pays_nothing(fleet: Fleet, market: Market, ledger: Ledger) -> None:
    fleet.replica(_per_hour(3_600_000))
    model = market.content("model", Pricing("fixed", 1_000_000, 0))
    order_id = fleet.deploy(1, model=model, deposit=4_600_000)
    fleet.grant_missing(order_id)
    receipt = market.developer.send(CancelOrder(order_id))
    assert _payments(receipt) == {}
    assert attrs(receipt, "refund")["amount"] == 4_600_000
    assert ledger.order(order_id).state == "cancelled"


# --- replacing a silent replica ------------------------------------------------------------------------------


def test_a_replaced_replica_and_its_successor_are_each_paid_their_share(
    fleet: Fleet, market: Market, ledger: Ledger, clock: Any
) -> None:
    a = fleet.replica(_per_hour(3_600_000))
    b = fleet.replica(_per_hour(3_600_000))
    model = market.content("model", _per_hour(1_800_000))
    # model 1.8 * 2 h * 2 = 7.2, a and b 3.6 * 2 h each = 14.4: 21.6 tokens
    order_id = fleet.deploy(2, model=model, lease_hours=2, deposit=21_600_000)
    c = fleet.replica(_per_hour(1_800_000))  # joins the market later: cheaper, so it may take a seat over
    dear = fleet.replica(_per_hour(3_600_001))  # dearer than the seat it would take: never a candidate
    fleet.serve(order_id)
    with pytest.raises(InvalidState, match="reassigned only after"):
        market.developer.send(ReassignOrder(order_id, a.machine_id))
    clock.advance(1800)
    fleet.heartbeat(b.machine_id, c.machine_id, dear.machine_id)
    receipt = fleet.gateway.send(ReassignOrder(order_id, a.machine_id))  # anyone may send it
    assert attrs(receipt, "order.reassigned") == {"order_id": order_id, "from": a.machine_id, "to": c.machine_id}
    order = ledger.order(order_id)
    assert (order.state, order.usage_seconds) == ("running", 1800)  # b keeps serving
    assert set(order.machines) == {b.machine_id, c.machine_id}
    seats = {seat.machine_id: seat for seat in ledger.checkpoints(order_id)}
    assert (seats[a.machine_id].released, seats[a.machine_id].usage_seconds) == (True, 1800)
    assert (seats[c.machine_id].compute_offer, seats[c.machine_id].released) == (c.compute_offer, False)
    removed = {e.machine_id: e.removed_at for e in ledger.endpoints(order_id)}
    assert removed == {a.machine_id: clock.now, b.machine_id: None}
    with pytest.raises(NotAuthorized, match="not assigned"):
        fleet.publish(order_id, a.machine_id)
    with pytest.raises(InvalidState, match="waits for the keys"):
        fleet.publish(order_id, c.machine_id)
    grants = fleet.grant_missing(order_id)  # the keepers see the new machine's missing grants
    assert [e.kind for r in grants for e in r.events] == ["grant.posted"] * 2  # the order stays running
    clock.advance(600)
    fleet.publish(order_id, c.machine_id)
    clock.advance(1200)
    receipt = market.developer.send(StopDeployment(order_id))
    # a 1800 s at 3.6/h = 1.8; b 3600 s = 3.6; c 1200 s at 1.8/h = 0.6; model 1.8/h * 6600 s = 3.3
    assert _payments(receipt) == {
        a.provider.address: 1_800_000,
        b.provider.address: 3_600_000,
        c.provider.address: 600_000,
        market.owners[model].address: 3_300_000,
    }
    assert attrs(receipt, "refund")["amount"] == 21_600_000 - 9_300_000
    assert ledger.order(order_id).usage_seconds == 6600


def test_without_a_spare_machine_a_deployment_shrinks_then_fails(
    fleet: Fleet, market: Market, ledger: Ledger, clock: Any
) -> None:
    a = fleet.replica(_per_hour(3_600_000))
    b = fleet.replica(_per_hour(3_600_000))
    model = market.content("model", Pricing("fixed", 1_000_000, 0))
    order_id = fleet.deploy(2, model=model, deposit=8_200_000)
    fleet.serve(order_id)
    clock.advance(1800)
    fleet.heartbeat(b.machine_id)
    receipt = market.developer.send(ReassignOrder(order_id, a.machine_id))
    assert attrs(receipt, "order.reassigned") == {"order_id": order_id, "from": a.machine_id, "to": None}
    order = ledger.order(order_id)
    assert (order.state, order.machines, order.usage_seconds) == ("running", (b.machine_id,), 1800)
    clock.advance(TIMEOUT + 1)
    receipt = market.developer.send(ReassignOrder(order_id, b.machine_id))
    assert attrs(receipt, "order.failed")["reason"] == NO_MACHINE_LEFT
    # a served 1800 s, b 1800 + 121 s; the model's fixed price is not owed by a deployment that failed
    assert _payments(receipt) == {a.provider.address: 1_800_000, b.provider.address: 1_921_000}
    assert attrs(receipt, "refund")["amount"] == 8_200_000 - 3_721_000
    order = ledger.order(order_id)
    assert (order.state, order.escrow, order.usage_seconds) == ("failed", 0, 3721)


def test_a_ready_deployment_that_loses_a_machine_waits_for_grants_again(
    fleet: Fleet, market: Market, ledger: Ledger, clock: Any
) -> None:
    a, b = fleet.replica(), fleet.replica()
    order_id = fleet.deploy(2)
    fleet.grant_missing(order_id)
    spare = fleet.replica()
    clock.advance(TIMEOUT + 1)
    fleet.heartbeat(b.machine_id, spare.machine_id)
    market.developer.send(ReassignOrder(order_id, a.machine_id))
    assert ledger.order(order_id).state == "pending_grants"
    assert fleet.grant_missing(order_id)[-1].events[-1].kind == "order.ready"


# --- credits and token billing -------------------------------------------------------------------------------


def test_users_prepay_and_the_gateway_bills_tokens_with_revenue_shares(
    fleet: Fleet, market: Market, ledger: Ledger, make_wallet: Callable[..., Wallet]
) -> None:
    fleet.replica()
    model = market.content("model", Pricing("revenue_share", 0, 1000))
    adapter = market.content("model", Pricing("revenue_share", 0, 500))
    order_id = fleet.deploy(1, model=model, adapters=(adapter,), params=fleet.params(2_000_000))
    user = make_wallet("end user", funds=10_000_000)
    with pytest.raises(InvalidState, match="only be credited when ready or running"):
        user.send(DepositCredit(order_id, 1))
    fleet.serve(order_id)
    receipt = user.send(DepositCredit(order_id, 3_000_000))
    assert attrs(receipt, "credit.deposited") == {
        "order_id": order_id,
        "user": user.address,
        "amount": 3_000_000,
        "balance": 3_000_000,
    }
    assert fleet.balance(user) == 7_000_000
    with pytest.raises(InsufficientFunds):
        user.send(DepositCredit(order_id, 7_000_001))
    with pytest.raises(NotAuthorized, match="gateway"):
        user.send(SettleUsage(order_id, user.address, 1000, RECEIPTS))
    model_owner, adapter_owner = market.owners[model].address, market.owners[adapter].address
    receipt = fleet.gateway.send(SettleUsage(order_id, user.address, 1000, RECEIPTS))
    assert _payments(receipt) == {model_owner: 200_000, adapter_owner: 100_000, market.developer.address: 1_700_000}
    assert attrs(receipt, "usage.settled") == {
        "order_id": order_id,
        "user": user.address,
        "tokens": 1000,
        "charge": 2_000_000,
        "capped": False,
        "receipts_digest": RECEIPTS,
    }
    credit = ledger.credit(order_id, user.address)
    assert (credit.balance, credit.spent) == (1_000_000, 2_000_000)
    # 1001 tokens cost 2.002 tokens, but only 1 is left: the charge is capped at the credit.
    receipt = fleet.gateway.send(SettleUsage(order_id, user.address, 1001, RECEIPTS))
    assert (attrs(receipt, "usage.settled")["charge"], attrs(receipt, "usage.settled")["capped"]) == (1_000_000, True)
    assert _payments(receipt) == {model_owner: 100_000, adapter_owner: 50_000, market.developer.address: 850_000}
    again = signed(ledger, fleet.gateway_identity, SettleUsage(order_id, user.address, 5, RECEIPTS))
    receipt = ledger.submit(again)
    assert _payments(receipt) == {} and attrs(receipt, "usage.settled")["capped"] is True
    with pytest.raises(NonceMismatch, match="replay"):
        ledger.submit(again)
    assert ledger.credit(order_id, user.address) == Credit(order_id, user.address, 0, 3_000_000, credit.updated_at)


def test_unspent_credit_comes_back_once_the_deployment_is_stopped(
    fleet: Fleet, market: Market, ledger: Ledger, make_wallet: Callable[..., Wallet]
) -> None:
    fleet.replica()
    order_id = fleet.deploy(1)
    fleet.serve(order_id)
    user = make_wallet("end user", funds=1_000_000)
    user.send(DepositCredit(order_id, 600_000))
    with pytest.raises(InvalidState, match="once its owner stops it"):
        user.send(WithdrawCredit(order_id, 1))
    market.developer.send(StopDeployment(order_id))
    with pytest.raises(InvalidState):
        user.send(DepositCredit(order_id, 1))
    with pytest.raises(InsufficientFunds, match="600000 left"):
        user.send(WithdrawCredit(order_id, 600_001))
    receipt = user.send(WithdrawCredit(order_id, 600_000))
    assert attrs(receipt, "credit.withdrawn")["balance"] == 0
    assert fleet.balance(user) == 1_000_000
    stranger = make_wallet("stranger", funds=0)
    assert ledger.credit(order_id, stranger.address) == Credit(order_id, stranger.address, 0, 0, 0)
    with pytest.raises(InsufficientFunds):
        stranger.send(WithdrawCredit(order_id, 1))
    with pytest.raises(RecordNotFound):
        ledger.credit("or-0000000000000000", stranger.address)


def test_a_serving_provider_keeps_its_stake(fleet: Fleet, market: Market) -> None:
    a = fleet.replica()
    order_id = fleet.deploy(1)
    a.provider.send(WithdrawStake(STAKE // 2))  # 50 tokens left: still the serving stake
    with pytest.raises(InvalidState, match="serve deployment"):
        a.provider.send(WithdrawStake(1))
    market.developer.send(CancelOrder(order_id))
    a.provider.send(WithdrawStake(STAKE // 2))

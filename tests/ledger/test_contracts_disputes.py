"""Disputes and timeouts on every backend: verified commitments, who is slashed, how the slashed stake is split
between referees and the majority, what is burned, and every way a gateway could bring bad evidence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tests.ledger.deployed import PARAMS, REQUEST, SERVED, STAKE, Fleet, Replica
from tests.ledger.test_contracts import Market, attrs

from cloister.crypto.identity import Identity
from cloister.errors import InvalidTransaction, NotAuthorized, RecordExists, RecordNotFound
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.records import Dispute, Timeout
from cloister.ledger.transactions import DepositStake, OpenDispute, ReassignOrder, ReportTimeout
from cloister.ledger.wallet import Wallet

WRONG = "sha256:" + "bd" * 32
OTHER = "sha256:" + "0e" * 32
TIMEOUT = 120


@pytest.fixture
def market(ledger: Ledger, make_wallet: Callable[..., Wallet]) -> Market:
    return Market(ledger, make_wallet)


@pytest.fixture
def fleet(market: Market) -> Fleet:
    return Fleet(market)


def _deployment(fleet: Fleet, replicas: int, *, stake: int = STAKE) -> tuple[str, list[Replica]]:
    machines = [fleet.replica(stake=stake) for _ in range(replicas)]
    order_id = fleet.deploy(replicas)
    fleet.serve(order_id)
    return order_id, machines


def _rewards(receipt: TxReceipt) -> dict[str, int]:
    return {e.attrs["to"]: e.attrs["amount"] for e in receipt.events if e.kind == "payment"}


def test_a_liar_under_sampling_3_is_slashed_and_the_honest_are_rewarded(fleet: Fleet, ledger: Ledger) -> None:
    order_id, (a, b, liar) = _deployment(fleet, 3)
    liar.provider.send(DepositStake(1))  # 100 tokens + 1 unit: half of it does not divide evenly
    commitments = (
        fleet.commitment(order_id, a.machine_id),
        fleet.commitment(order_id, liar.machine_id, WRONG),
        fleet.commitment(order_id, b.machine_id),
    )
    before = {r.machine_id: fleet.balance(r.provider) for r in (a, b, liar)}
    receipt = fleet.gateway.send(OpenDispute(order_id, REQUEST, commitments))
    opened = attrs(receipt, "dispute.opened")
    # 5000 bps of 100_000_001 = 50_000_000; 2000 bps of it (10_000_000) for referees, none here: the majority
    # shares both pots, 5_000_000 + 20_000_000 each, nothing left over.
    assert opened == {
        "dispute_id": opened["dispute_id"],
        "order_id": order_id,
        "request_digest": REQUEST,
        "output_digest": SERVED,
        "slashed": [liar.machine_id],
        "rewarded": sorted([a.machine_id, b.machine_id]),
        "slashed_amount": 50_000_000,
        "burned": 0,
    }
    assert attrs(receipt, "stake.slashed") == {
        "machine_id": liar.machine_id,
        "provider": liar.provider.address,
        "amount": 50_000_000,
        "reason": f"dispute {opened['dispute_id']}",
    }
    assert fleet.stake(liar) == STAKE + 1 - 50_000_000
    assert _rewards(receipt) == {a.provider.address: 25_000_000, b.provider.address: 25_000_000}
    assert fleet.balance(a.provider) == before[a.machine_id] + 25_000_000
    assert fleet.balance(liar.provider) == before[liar.machine_id]
    assert fleet.stake(a) == fleet.stake(b) == STAKE
    assert ledger.disputes(order_id) == [
        Dispute(
            opened["dispute_id"],
            order_id,
            REQUEST,
            commitments,
            SERVED,
            (liar.machine_id,),
            tuple(sorted([a.machine_id, b.machine_id])),
            50_000_000,
            fleet.gateway.address,
            ledger.disputes(order_id)[0].created_at,
        )
    ]
    with pytest.raises(RecordExists, match="already disputed"):
        fleet.gateway.send(OpenDispute(order_id, REQUEST, commitments))


def test_referees_take_their_share_and_the_remainder_is_burned(fleet: Fleet) -> None:
    order_id, (a, b, c, liar) = _deployment(fleet, 4)
    commitments = (
        fleet.commitment(order_id, liar.machine_id, WRONG),
        fleet.commitment(order_id, a.machine_id),
        fleet.commitment(order_id, b.machine_id),
        fleet.commitment(order_id, c.machine_id, role="referee"),
    )
    receipt = fleet.gateway.send(OpenDispute(order_id, REQUEST, commitments))
    # slashed 50_000_000: the referee c takes all 10_000_000 of the referee pot; 40_000_000 // 3 = 13_333_333
    # to each of a, b and c; 1 unit is burned.
    assert _rewards(receipt) == {
        a.provider.address: 13_333_333,
        b.provider.address: 13_333_333,
        c.provider.address: 23_333_333,
    }
    assert attrs(receipt, "dispute.opened")["burned"] == 1


def test_without_a_strict_majority_nobody_is_slashed(fleet: Fleet, ledger: Ledger) -> None:
    order_id, (a, b) = _deployment(fleet, 2)
    commitments = (fleet.commitment(order_id, a.machine_id), fleet.commitment(order_id, b.machine_id, WRONG))
    receipt = fleet.gateway.send(OpenDispute(order_id, REQUEST, commitments))
    opened = attrs(receipt, "dispute.opened")
    assert (opened["output_digest"], opened["slashed"], opened["rewarded"], opened["slashed_amount"]) == (
        None,
        [],
        [],
        0,
    )
    assert fleet.stake(a) == fleet.stake(b) == STAKE
    assert [e.kind for e in receipt.events] == ["dispute.opened"]
    assert ledger.disputes(order_id)[0].output_digest is None


def test_a_dispute_refuses_bad_evidence(fleet: Fleet, market: Market) -> None:
    order_id, (a, b, _) = _deployment(fleet, 3)
    outsider = fleet.replica()
    honest, lie = fleet.commitment(order_id, a.machine_id), fleet.commitment(order_id, b.machine_id, WRONG)

    def refused(error: type[Exception], match: str, *commitments: bytes, sender: Wallet | None = None) -> None:
        with pytest.raises(error, match=match):
            (sender or fleet.gateway).send(OpenDispute(order_id, REQUEST, commitments))

    refused(NotAuthorized, "gateway", honest, lie, sender=market.developer)
    refused(InvalidTransaction, "same output", honest, fleet.commitment(order_id, b.machine_id))
    refused(InvalidTransaction, "distinct machines", honest, lie, fleet.commitment(order_id, b.machine_id))
    refused(InvalidTransaction, "malformed", honest, lie[:-1])
    tampered = lie.replace(WRONG.encode(), OTHER.encode())
    refused(InvalidTransaction, "not signed by loader key", honest, tampered)
    refused(
        InvalidTransaction,
        "not signed by loader key",
        honest,
        fleet.commitment(order_id, b.machine_id, WRONG, signer=a.loader),
    )
    refused(NotAuthorized, "never assigned", honest, fleet.commitment(order_id, outsider.machine_id, WRONG))
    refused(InvalidTransaction, "not order", honest, fleet.commitment(order_id, b.machine_id, WRONG, request=OTHER))
    refused(
        InvalidTransaction, "cannot be judged", honest, fleet.commitment(order_id, b.machine_id, WRONG, params=OTHER)
    )
    assert fleet.stake(b) == STAKE
    assert fleet.ledger.disputes(order_id) == []
    with pytest.raises(RecordNotFound):
        fleet.ledger.disputes("or-0000000000000000")


def test_a_replaced_replica_can_still_be_slashed(fleet: Fleet, market: Market, clock: Any) -> None:
    order_id, (a, b, liar) = _deployment(fleet, 3)
    spare = fleet.replica()
    clock.advance(TIMEOUT + 1)
    fleet.heartbeat(a.machine_id, b.machine_id, spare.machine_id)
    market.developer.send(ReassignOrder(order_id, liar.machine_id))
    commitments = tuple(fleet.commitment(order_id, r.machine_id, WRONG if r is liar else SERVED) for r in (a, b, liar))
    receipt = fleet.gateway.send(OpenDispute(order_id, REQUEST, commitments))
    assert attrs(receipt, "dispute.opened")["slashed"] == [liar.machine_id]


def test_a_silent_replica_pays_the_owner_once_per_request(fleet: Fleet, market: Market, ledger: Ledger) -> None:
    order_id, (a, _) = _deployment(fleet, 2)
    outsider = fleet.replica()
    with pytest.raises(NotAuthorized, match="gateway"):
        market.developer.send(ReportTimeout(order_id, a.machine_id, REQUEST))
    with pytest.raises(NotAuthorized, match="never assigned"):
        fleet.gateway.send(ReportTimeout(order_id, outsider.machine_id, REQUEST))
    owner = fleet.balance(market.developer)
    receipt = fleet.gateway.send(ReportTimeout(order_id, a.machine_id, REQUEST))
    # 500 bps of 100 tokens = 5 tokens, to the deployment's owner
    assert attrs(receipt, "replica.timeout") == {
        "order_id": order_id,
        "machine_id": a.machine_id,
        "request_digest": REQUEST,
        "amount": 5_000_000,
    }
    assert attrs(receipt, "stake.slashed")["reason"] == f"timeout on {REQUEST}"
    assert fleet.stake(a) == STAKE - 5_000_000
    assert fleet.balance(market.developer) == owner + 5_000_000
    with pytest.raises(RecordExists, match="already reported"):
        fleet.gateway.send(ReportTimeout(order_id, a.machine_id, REQUEST))
    fleet.gateway.send(ReportTimeout(order_id, a.machine_id, PARAMS))  # another request: 5% of what is left
    assert fleet.stake(a) == STAKE - 5_000_000 - 4_750_000
    timeouts = ledger.timeouts(order_id)
    assert [(t.machine_id, t.request_digest, t.amount) for t in timeouts] == sorted(
        [(a.machine_id, REQUEST, 5_000_000), (a.machine_id, PARAMS, 4_750_000)], key=lambda t: t[1]
    )
    assert all(isinstance(t, Timeout) for t in timeouts)


def test_slashing_only_ever_targets_deployments(fleet: Fleet, market: Market) -> None:
    model, dataset, engine = market.basic()
    finetune, _ = market.order(model, (dataset,), engine)
    machine_id = market.ledger.order(finetune).machines[0]
    with pytest.raises(InvalidTransaction, match="only inference orders"):
        fleet.gateway.send(ReportTimeout(finetune, machine_id, REQUEST))
    loader = Identity.generate()
    with pytest.raises(InvalidTransaction, match="only inference orders"):
        fleet.gateway.send(
            OpenDispute(
                finetune,
                REQUEST,
                (
                    fleet.commitment(finetune, machine_id, signer=loader),
                    fleet.commitment(finetune, machine_id, WRONG, signer=loader),
                ),
            )
        )

"""Metering: credit minus unsettled usage minus running worst cases must cover each new request."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cloister.errors import CreditExhausted
from cloister.gateway.metering import Meter, charge
from cloister.gateway.store import PENDING, SETTLED, GatewayStore, receipts_digest

PRICE = 2_000_000  # units per 1000 tokens
ORDER, USER = "or-1", "cl-user"


class Credits:
    """The ledger's credit records, as the meter reads them (a dict the test changes, counting reads)."""

    def __init__(self, balance: int) -> None:
        self.balance = balance
        self.reads = 0

    def __call__(self, order_id: str, user: str) -> int:
        self.reads += 1
        return self.balance if (order_id, user) == (ORDER, USER) else 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> GatewayStore:
    return GatewayStore(tmp_path / "gateway.db")


def test_charge_rounds_down_like_the_contract() -> None:
    assert charge(1000, PRICE) == PRICE
    assert charge(1, 999) == 0
    assert charge(1501, 1000) == 1501


def test_worst_case_must_fit(store: GatewayStore) -> None:
    meter = Meter(store, Credits(charge(100, PRICE)))
    meter.release(meter.hold(ORDER, USER, 100, PRICE))
    with pytest.raises(CreditExhausted, match="cannot cover") as caught:
        meter.hold(ORDER, USER, 101, PRICE)
    assert caught.value.http_status == 402


def test_running_requests_hold_their_worst_case(store: GatewayStore) -> None:
    meter = Meter(store, Credits(charge(100, PRICE)))
    first = meter.hold(ORDER, USER, 60, PRICE)
    with pytest.raises(CreditExhausted):
        meter.hold(ORDER, USER, 60, PRICE)
    second = meter.hold(ORDER, USER, 40, PRICE)
    meter.release(first)
    meter.release(second)
    meter.release(meter.hold(ORDER, USER, 100, PRICE))


def test_unsettled_usage_counts_until_settled(store: GatewayStore) -> None:
    credits = Credits(charge(100, PRICE))
    meter = Meter(store, credits)
    store.record("rc-1", ORDER, b"{}", 1, USER, 70)
    with pytest.raises(CreditExhausted):
        meter.hold(ORDER, USER, 31, PRICE)
    store.close_batches()
    assert store.unsettled_tokens(ORDER, USER) == 70, "a batch in flight is still owed"
    (batch,) = store.pending_batches()
    credits.balance -= charge(batch.tokens, PRICE)  # the ledger charged it
    store.finish_batch(batch.batch_id, SETTLED, "sha256:tx")
    assert store.unsettled_tokens(ORDER, USER) == 0
    meter.release(meter.hold(ORDER, USER, 30, PRICE))


def test_a_refusal_is_rechecked_against_a_fresh_read(store: GatewayStore) -> None:
    """A deposit made a second ago must count: the cached balance is not trusted to refuse."""
    credits, clock = Credits(0), Clock()
    meter = Meter(store, credits, clock=clock)
    meter.release(meter.hold(ORDER, USER, 0, PRICE))
    credits.balance = charge(10, PRICE)
    meter.release(meter.hold(ORDER, USER, 10, PRICE))
    assert credits.reads == 2
    meter.release(meter.hold(ORDER, USER, 10, PRICE))
    assert credits.reads == 2, "an accepted request uses the cached balance"
    clock.now += 60
    meter.release(meter.hold(ORDER, USER, 10, PRICE))
    assert credits.reads == 3, "an old balance is read again"


def test_free_deployments_need_no_credit(store: GatewayStore) -> None:
    meter = Meter(store, Credits(0))
    meter.release(meter.hold(ORDER, "someone-else", 4096, 0))


def test_batches_group_by_user_and_deployment(store: GatewayStore) -> None:
    store.record("rc-b", ORDER, b"b", 1, USER, 5)
    store.record("rc-a", ORDER, b"a", 1, USER, 7)
    store.record("rc-c", ORDER, b"c", 1, "cl-other", 3)
    store.record("rc-d", "or-2", b"d", 1, USER, 11)
    store.close_batches()
    batches = {(b.order_id, b.user): b for b in store.pending_batches()}
    assert {key: b.tokens for key, b in batches.items()} == {
        (ORDER, USER): 12,
        (ORDER, "cl-other"): 3,
        ("or-2", USER): 11,
    }
    assert batches[(ORDER, USER)].receipts_digest == receipts_digest(["rc-a", "rc-b"])
    store.close_batches()
    assert len(store.pending_batches()) == 3, "closing again makes no empty or duplicate batches"
    assert {state for state, _ in store.batch_states().values()} == {PENDING}


def test_a_receipt_is_recorded_once(store: GatewayStore) -> None:
    store.record("rc-1", ORDER, b"data", 1, USER, 5)
    with pytest.raises(sqlite3.IntegrityError):
        store.record("rc-1", ORDER, b"other", 2, USER, 500)
    assert store.receipt("rc-1") == b"data"
    assert store.unsettled_tokens(ORDER, USER) == 5, "the failed record left no usage behind"
    assert store.receipt("rc-2") is None


def test_the_store_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    first = GatewayStore(path)
    first.record("rc-1", ORDER, b"data", 1, USER, 5)
    first.close_batches()
    first.close()
    again = GatewayStore(path)
    assert again.receipt("rc-1") == b"data"
    assert [b.tokens for b in again.pending_batches()] == [5]

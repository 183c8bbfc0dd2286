"""The wallet: local nonce counting, one refresh on a nonce mismatch, no other retries, and thread safety."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cloister.crypto.identity import Identity
from cloister.errors import InsufficientFunds, NonceMismatch
from cloister.ledger.envelope import SignedTransaction
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.records import Account
from cloister.ledger.wallet import Wallet


class Recording:
    """The ledger under test, counting the wallet's reads and submits; ``stale`` serves an outdated nonce."""

    def __init__(self, inner: Ledger, *, stale: bool = False) -> None:
        self.inner = inner
        self.stale = stale
        self.reads = 0
        self.submits = 0

    @property
    def chain_id(self) -> str:
        return self.inner.chain_id

    def account(self, address: str) -> Account:
        self.reads += 1
        account = self.inner.account(address)
        return dataclasses.replace(account, nonce=0) if self.stale else account

    def submit(self, signed: SignedTransaction) -> TxReceipt:
        self.submits += 1
        return self.inner.submit(signed)


def _wallet(ledger: Ledger, identity: Identity | None = None, **options: Any) -> tuple[Wallet, Recording]:
    recording = Recording(ledger, **options)
    return Wallet(identity or Identity.generate(), recording), recording  # type: ignore[arg-type]


def test_nonces_are_read_once_then_counted(ledger: Ledger) -> None:
    wallet, recording = _wallet(ledger)
    wallet.register("alice")
    wallet.faucet(100)
    for _ in range(3):
        wallet.transfer(wallet.address, 1)
    assert (recording.reads, recording.submits) == (1, 5)
    assert ledger.account(wallet.address).nonce == 5


def test_a_stale_nonce_is_refreshed_and_retried_once(ledger: Ledger) -> None:
    identity = Identity.generate()
    first, first_calls = _wallet(ledger, identity)
    second, _ = _wallet(ledger, identity)
    first.register("alice")
    second.faucet(100)  # the second wallet now knows nonce 2; the first still thinks 1
    receipt = first.transfer(identity.address, 1)
    assert (first_calls.reads, first_calls.submits) == (2, 3)
    assert ledger.account(identity.address).nonce == 3
    assert receipt.height == ledger.head().height


def test_a_second_mismatch_is_raised(ledger: Ledger) -> None:
    identity = Identity.generate()
    Wallet(identity, ledger).register("alice")
    stale, recording = _wallet(ledger, identity, stale=True)  # the same account, through a lagging view
    with pytest.raises(NonceMismatch, match="replay"):
        stale.transfer(identity.address, 1)
    assert (recording.reads, recording.submits) == (2, 2)


def test_other_rejections_are_final_and_use_no_nonce(ledger: Ledger) -> None:
    wallet, recording = _wallet(ledger)
    wallet.register("alice")
    wallet.faucet(10)
    with pytest.raises(InsufficientFunds):
        wallet.transfer(wallet.address, 11)
    assert recording.submits == 3
    wallet.transfer(wallet.address, 10)
    assert ledger.account(wallet.address).nonce == 3


def test_threads_can_share_a_wallet(ledger: Ledger, make_wallet: Callable[..., Wallet]) -> None:
    alice, bob = make_wallet("alice", funds=100), make_wallet("bob", funds=0)
    heights: list[int] = []
    errors: list[BaseException] = []

    def spend() -> None:
        try:
            for _ in range(5):
                heights.append(alice.transfer(bob.address, 1).height)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(heights)) == 20
    assert ledger.account(bob.address).balance == 20
    assert ledger.account(alice.address).nonce == 2 + 20


def test_address_is_the_identitys(ledger: Ledger) -> None:
    identity = Identity.generate()
    assert Wallet(identity, ledger).address == identity.address

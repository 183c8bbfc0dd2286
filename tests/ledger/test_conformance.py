"""Backend conformance: every test here runs against the embedded ledger and against it over HTTP.

Contract behaviour is covered in ``test_contracts*.py``; these tests pin what a backend adds: receipts and the
head, typed rejections, the events cursor, and many submitters at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from cloister.crypto.identity import Identity
from cloister.errors import BadRequest, NonceMismatch, RecordNotFound, SignatureRejected, WrongChain
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.envelope import SignedTransaction, Transaction
from cloister.ledger.evm.ledger import EvmLedger
from cloister.ledger.genesis import Genesis
from cloister.ledger.protocol import Ledger, LedgerEvent
from cloister.ledger.transactions import FaucetDrip
from cloister.ledger.verify import verify_ledger
from cloister.ledger.wallet import Wallet

MakeWallet = Callable[..., Wallet]


def signed_drip(identity: Identity, nonce: int, chain_id: str = "cloister-test") -> SignedTransaction:
    payload = FaucetDrip(1)
    tx = Transaction(payload.TYPE, payload.to_payload(), identity.address, nonce, chain_id)
    return SignedTransaction.sign(identity, tx)


def test_each_receipt_is_the_next_block(ledger: Ledger, make_wallet: MakeWallet) -> None:
    alice = make_wallet("alice")
    start = ledger.head()
    receipts = [alice.transfer(alice.address, n) for n in (1, 2, 3)]
    assert [r.height for r in receipts] == [start.height + 1, start.height + 2, start.height + 3]
    assert len({r.tx_hash for r in receipts}) == 3
    assert ledger.head().height == receipts[-1].height
    assert ledger.head().hash != start.hash
    assert [e.attrs["amount"] for r in receipts for e in r.events if e.kind == "transfer"] == [1, 2, 3]
    assert ledger.events(after=receipts[0].events[0].seq - 1, limit=3).events == [e for r in receipts for e in r.events]


def test_a_replayed_transaction_is_a_nonce_mismatch(ledger: Ledger) -> None:
    identity = Identity.generate()
    Wallet(identity, ledger).register("replayer")
    head = ledger.head()
    with pytest.raises(NonceMismatch, match="replay"):
        ledger.submit(signed_drip(identity, 1))
    with pytest.raises(NonceMismatch, match="gap"):
        ledger.submit(signed_drip(identity, 3))
    signed = signed_drip(identity, 2)
    ledger.submit(signed)
    with pytest.raises(NonceMismatch) as caught:
        ledger.submit(signed)
    assert caught.value.details == {"expected": 3, "got": 2}
    assert ledger.head().height == head.height + 1


def test_forged_and_foreign_transactions_are_refused(ledger: Ledger) -> None:
    identity = Identity.generate()
    Wallet(identity, ledger).register("someone")
    head = ledger.head()
    honest = signed_drip(identity, 2)
    with pytest.raises(SignatureRejected):
        ledger.submit(SignedTransaction(honest.tx, honest.public_key, bytes(64)))
    impostor = Identity.generate()
    with pytest.raises(SignatureRejected):
        ledger.submit(SignedTransaction(honest.tx, impostor.public.signing_key, honest.signature))
    with pytest.raises(WrongChain):
        ledger.submit(signed_drip(identity, 2, chain_id="another-chain"))
    with pytest.raises(RecordNotFound):
        ledger.submit(signed_drip(Identity.generate(), 1))
    assert ledger.head() == head


def test_the_events_cursor_pages_without_gaps_or_repeats(ledger: Ledger, make_wallet: MakeWallet) -> None:
    alice, bob = make_wallet("alice"), make_wallet("bob")
    for amount in range(1, 8):
        alice.transfer(bob.address, amount)
    everything = ledger.events(after=0, limit=1000)
    assert [e.seq for e in everything.events] == list(range(1, len(everything.events) + 1))
    assert everything.cursor == len(everything.events) == 11
    for limit in (1, 2, 3, 5):
        seen: list[LedgerEvent] = []
        cursor = 0
        while True:
            page = ledger.events(after=cursor, limit=limit)
            assert len(page.events) <= limit
            if not page.events:
                assert page.cursor == cursor
                break
            seen.extend(page.events)
            cursor = page.cursor
        assert seen == everything.events


def test_a_client_that_was_offline_catches_up(ledger: Ledger, make_wallet: MakeWallet) -> None:
    alice = make_wallet("alice")
    caught_up = ledger.events(limit=1000).cursor
    missed = [alice.transfer(alice.address, n) for n in range(1, 5)]
    page = ledger.events(after=caught_up, limit=1000)
    assert page.events == [e for r in missed for e in r.events]
    assert ledger.events(after=page.cursor).events == []
    assert ledger.events(after=page.cursor + 50).cursor == page.cursor + 50


def test_page_sizes_are_bounded(ledger: Ledger) -> None:
    for bad in (0, 1001):
        with pytest.raises(BadRequest, match="limit"):
            ledger.events(after=0, limit=bad)


def test_concurrent_submitters_are_all_accepted(
    ledger: Ledger, make_wallet: MakeWallet, embedded: EmbeddedLedger
) -> None:
    sink = make_wallet("sink", funds=0)
    senders = [make_wallet(f"sender{i}", funds=100) for i in range(4)]
    per_sender = 8
    receipts: list[list[int]] = [[] for _ in senders]
    failures: list[BaseException] = []
    shared = make_wallet("shared", funds=100)
    shared_heights: list[int] = []

    def run(index: int, wallet: Wallet) -> None:
        try:
            for _ in range(per_sender):
                receipts[index].append(wallet.transfer(sink.address, 1).height)
                shared_heights.append(shared.transfer(sink.address, 1).height)
        except BaseException as exc:  # reported below, with the thread's failure
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    heights = [h for hs in receipts for h in hs] + shared_heights
    assert len(heights) == len(set(heights)) == 2 * len(senders) * per_sender
    for wallet, own in zip(senders, receipts, strict=True):
        assert own == sorted(own)
        account = ledger.account(wallet.address)
        assert (account.nonce, account.balance) == (2 + per_sender, 100 - per_sender)
    assert ledger.account(shared.address).nonce == 2 + len(senders) * per_sender
    assert ledger.account(sink.address).balance == 2 * len(senders) * per_sender
    if not isinstance(ledger, EvmLedger):  # the embedded log, read directly or over HTTP, replays to the head
        assert verify_ledger(embedded.path).height == ledger.head().height


def test_block_hashes_are_readable_by_height(ledger: Ledger, make_wallet: MakeWallet, genesis: Genesis) -> None:
    alice = make_wallet("alice")
    head = ledger.head()
    assert ledger.block_hash(head.height) == head.hash
    if not isinstance(ledger, EvmLedger):
        assert ledger.block_hash(0) == genesis.hash
    receipt = alice.transfer(alice.address, 1)
    assert ledger.block_hash(receipt.height) == ledger.head().hash != head.hash
    assert ledger.block_hash(head.height) == head.hash
    with pytest.raises(RecordNotFound, match="no block at height"):
        ledger.block_hash(receipt.height + 1)
    with pytest.raises(BadRequest):
        ledger.block_hash(-1)

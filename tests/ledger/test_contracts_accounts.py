"""Accounts, faucet, transfers, providers and stake, on every backend (the `ledger` fixture)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cloister.crypto.identity import Identity
from cloister.errors import (
    InsufficientFunds,
    InvalidTransaction,
    NonceMismatch,
    NotAuthorized,
    RecordExists,
    RecordNotFound,
    SignatureRejected,
    WrongChain,
)
from cloister.ledger.envelope import SignedTransaction, Transaction
from cloister.ledger.protocol import Ledger
from cloister.ledger.transactions import DepositStake, RegisterAccount, RegisterProvider, Transfer, WithdrawStake
from cloister.ledger.wallet import Wallet

MakeWallet = Callable[..., Wallet]


def test_register_records_both_keys(ledger: Ledger) -> None:
    identity = Identity.generate()
    receipt = Wallet(identity, ledger).register("alice")
    account = ledger.account(identity.address)
    assert (account.name, account.balance, account.stake, account.nonce) == ("alice", 0, 0, 1)
    assert account.signing_key == identity.public.signing_key
    assert account.sealing_key == identity.public.sealing_key
    assert [(e.kind, e.attrs) for e in receipt.events] == [
        ("account.registered", {"address": identity.address, "name": "alice"})
    ]


def test_register_twice_is_refused(make_wallet: MakeWallet) -> None:
    alice = make_wallet("alice", funds=0)
    with pytest.raises(RecordExists):
        alice.register("again")


def test_unregistered_senders_must_register_first(ledger: Ledger) -> None:
    stranger = Wallet(Identity.generate(), ledger)
    with pytest.raises(RecordNotFound, match=r"account\.register first"):
        stranger.faucet(5)
    with pytest.raises(RecordNotFound):
        ledger.account(stranger.address)


def test_faucet_and_its_limit(make_wallet: MakeWallet, ledger: Ledger) -> None:
    alice = make_wallet("alice", funds=0)
    receipt = alice.faucet(1_500_000)
    assert ledger.account(alice.address).balance == 1_500_000
    assert receipt.events[0].kind == "faucet.drip" and receipt.events[0].attrs["amount"] == 1_500_000
    with pytest.raises(NotAuthorized, match="at most"):
        alice.faucet(1_000_000_000_001)
    with pytest.raises(InvalidTransaction, match="amount"):
        alice.faucet(0)
    assert ledger.account(alice.address).balance == 1_500_000


def test_transfer(make_wallet: MakeWallet, ledger: Ledger) -> None:
    alice, bob = make_wallet("alice", funds=100), make_wallet("bob", funds=0)
    receipt = alice.transfer(bob.address, 30)
    assert receipt.events[0].attrs == {"sender": alice.address, "to": bob.address, "amount": 30}
    assert (ledger.account(alice.address).balance, ledger.account(bob.address).balance) == (70, 30)


def test_transfer_rejections_change_nothing(make_wallet: MakeWallet, ledger: Ledger) -> None:
    alice, bob = make_wallet("alice", funds=100), make_wallet("bob", funds=0)
    before = ledger.account(alice.address)
    with pytest.raises(InsufficientFunds, match="fund the account with at least 1 more"):
        alice.transfer(bob.address, 101)
    with pytest.raises(RecordNotFound, match="not registered"):
        alice.transfer(Identity.generate().address, 1)
    with pytest.raises(InvalidTransaction):
        alice.send(Transfer(bob.address, -5))
    assert ledger.account(alice.address) == before
    assert ledger.account(bob.address).balance == 0


def test_provider_registration_is_once_per_account(make_wallet: MakeWallet, ledger: Ledger) -> None:
    acme = make_wallet("acme", funds=0)
    acme.send(RegisterProvider("Acme GPUs", "H100s in Frankfurt"))
    provider = ledger.provider(acme.address)
    assert (provider.address, provider.name, provider.description) == (acme.address, "Acme GPUs", "H100s in Frankfurt")
    with pytest.raises(RecordExists):
        acme.send(RegisterProvider("Acme again", ""))
    with pytest.raises(RecordNotFound, match="not a provider"):
        ledger.provider(make_wallet("nobody", funds=0).address)


def test_stake_moves_between_balance_and_stake(make_wallet: MakeWallet, ledger: Ledger) -> None:
    acme = make_wallet("acme", funds=100)
    acme.send(DepositStake(60))
    account = ledger.account(acme.address)
    assert (account.balance, account.stake) == (40, 60)
    with pytest.raises(InsufficientFunds):
        acme.send(DepositStake(41))
    with pytest.raises(InsufficientFunds, match="has 60 staked"):
        acme.send(WithdrawStake(61))
    receipt = acme.send(WithdrawStake(25))
    assert receipt.events[0].attrs == {"address": acme.address, "amount": 25, "stake": 35}
    account = ledger.account(acme.address)
    assert (account.balance, account.stake) == (65, 35)


# --- the envelope, on every backend --------------------------------------------------------------------------


def _signed(identity: Identity, ledger: Ledger, nonce: int, chain_id: str | None = None) -> SignedTransaction:
    payload = Transfer(identity.address, 1)
    tx = Transaction(payload.TYPE, payload.to_payload(), identity.address, nonce, chain_id or ledger.chain_id)
    return SignedTransaction.sign(identity, tx)


def _funded(ledger: Ledger) -> Identity:
    """A registered account holding funds, whose next nonce is 3."""
    identity = Identity.generate()
    wallet = Wallet(identity, ledger)
    wallet.register("alice")
    wallet.faucet(10)
    return identity


def test_replayed_and_skipped_nonces_are_refused(ledger: Ledger) -> None:
    identity = _funded(ledger)
    signed = _signed(identity, ledger, nonce=3)
    ledger.submit(signed)
    with pytest.raises(NonceMismatch, match="replay"):
        ledger.submit(signed)
    with pytest.raises(NonceMismatch, match="gap"):
        ledger.submit(_signed(identity, ledger, nonce=5))
    assert ledger.account(identity.address).nonce == 3


def test_forged_signatures_and_other_chains_are_refused(ledger: Ledger) -> None:
    identity, mallory = _funded(ledger), Identity.generate()
    good = _signed(identity, ledger, nonce=3)
    with pytest.raises(SignatureRejected):
        ledger.submit(
            SignedTransaction(good.tx, good.public_key, mallory.sign("cloister/tx/v1", good.tx.signing_bytes()))
        )
    with pytest.raises(SignatureRejected):
        ledger.submit(SignedTransaction(good.tx, mallory.public.signing_key, good.signature))
    with pytest.raises(WrongChain):
        ledger.submit(_signed(identity, ledger, nonce=3, chain_id="cloister-elsewhere"))
    ledger.submit(good)


def test_registration_needs_nonce_one(ledger: Ledger) -> None:
    identity = Identity.generate()
    payload = RegisterAccount("late", identity.public.sealing_key)
    tx = Transaction(payload.TYPE, payload.to_payload(), identity.address, 2, ledger.chain_id)
    with pytest.raises(NonceMismatch, match=r"expected 1"):
        ledger.submit(SignedTransaction.sign(identity, tx))

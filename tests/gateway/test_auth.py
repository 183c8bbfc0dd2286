"""API keys at the gateway: only a key its account signed, for this gateway, by an account the ledger knows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloister.consensus.apikeys import make_api_key
from cloister.consensus.modes import parse_mode
from cloister.crypto.identity import Identity
from cloister.errors import ApiKeyRejected
from cloister.gateway.auth import KeyChecker
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import Genesis
from cloister.ledger.records import Account
from cloister.ledger.wallet import Wallet

GATEWAY = Identity.generate().address


@pytest.fixture
def ledger(tmp_path: Path) -> EmbeddedLedger:
    return EmbeddedLedger.create(tmp_path / "ledger.db", Genesis("cloister-test", int(time.time())))


@pytest.fixture
def user(ledger: EmbeddedLedger) -> Identity:
    identity = Identity.generate()
    Wallet(identity, ledger).register("user")
    return identity


class CountingAccounts:
    def __init__(self, ledger: EmbeddedLedger) -> None:
        self.ledger, self.reads = ledger, 0

    def __call__(self, address: str) -> Account:
        self.reads += 1
        return self.ledger.account(address)


def test_a_signed_key_names_its_account_and_mode(ledger: EmbeddedLedger, user: Identity) -> None:
    accounts = CountingAccounts(ledger)
    checker = KeyChecker(GATEWAY, accounts)
    key = make_api_key(user, GATEWAY, "sampling:3")
    caller = checker.check(f"Bearer {key}")
    assert caller.account == user.address
    assert caller.consensus == parse_mode("sampling:3")
    assert checker.check(f"bearer  {key} ").account == user.address
    assert accounts.reads == 1, "a verified key is remembered"
    assert checker.check(f"Bearer {make_api_key(user, GATEWAY)}").consensus is None


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwdw==", "clk_abc"])
def test_missing_key_is_401(ledger: EmbeddedLedger, header: str | None) -> None:
    with pytest.raises(ApiKeyRejected, match="no API key") as caught:
        KeyChecker(GATEWAY, ledger.account).check(header)
    assert caught.value.http_status == 401


def test_key_for_another_gateway_is_refused(ledger: EmbeddedLedger, user: Identity) -> None:
    other = Identity.generate().address
    with pytest.raises(ApiKeyRejected, match="for gateway"):
        KeyChecker(GATEWAY, ledger.account).check(f"Bearer {make_api_key(user, other)}")


def test_unregistered_account_is_refused(ledger: EmbeddedLedger) -> None:
    stranger = Identity.generate()
    with pytest.raises(ApiKeyRejected, match="not registered"):
        KeyChecker(GATEWAY, ledger.account).check(f"Bearer {make_api_key(stranger, GATEWAY)}")


def test_key_signed_by_someone_else_is_refused(ledger: EmbeddedLedger, user: Identity) -> None:
    """A forger re-signs a payload naming the victim's account with their own key."""
    forger = Identity.generate()
    genuine = make_api_key(user, GATEWAY)
    forged = make_api_key(forger, GATEWAY)
    spliced = genuine.split(".")[0] + "." + forged.split(".")[1]
    with pytest.raises(ApiKeyRejected):
        KeyChecker(GATEWAY, ledger.account).check(f"Bearer {spliced}")


def test_every_flipped_character_is_refused(ledger: EmbeddedLedger, user: Identity) -> None:
    key = make_api_key(user, GATEWAY, "single")
    checker = KeyChecker(GATEWAY, ledger.account)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for index in range(len("clk_"), len(key)):
        if key[index] == ".":
            continue
        swapped = alphabet[(alphabet.index(key[index]) + 1) % len(alphabet)]
        with pytest.raises(ApiKeyRejected):
            checker.check(f"Bearer {key[:index]}{swapped}{key[index + 1 :]}")


@pytest.mark.parametrize("cut", [5, 40, -1, -30])
def test_truncated_keys_are_refused(ledger: EmbeddedLedger, user: Identity, cut: int) -> None:
    key = make_api_key(user, GATEWAY)
    with pytest.raises(ApiKeyRejected):
        KeyChecker(GATEWAY, ledger.account).check(f"Bearer {key[:cut]}")


def test_the_cache_is_bounded(ledger: EmbeddedLedger, user: Identity) -> None:
    accounts = CountingAccounts(ledger)
    checker = KeyChecker(GATEWAY, accounts, cache_size=2)
    keys = [make_api_key(user, GATEWAY, issued_at=n) for n in range(3)]
    for key in keys:
        checker.check(f"Bearer {key}")
    checker.check(f"Bearer {keys[0]}")
    assert accounts.reads == 4, "the oldest key was forgotten and read again"

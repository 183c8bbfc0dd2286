"""A session anvil with the contracts deployed, for the EVM backend's own tests (the conformance suite runs the
shared ledger tests on it too, from tests/ledger)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from tests.ledger.conftest import FakeClock, make_genesis
from tests.ledger.evm_chain import EvmChain, evm_chain

from cloister.crypto.identity import Identity
from cloister.ledger.evm.keys import Keyring
from cloister.ledger.evm.ledger import EvmLedger
from cloister.ledger.evm.transact import AnvilGas
from cloister.ledger.wallet import Wallet


@pytest.fixture(scope="session")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvmChain]:
    with evm_chain(tmp_path_factory.mktemp("anvil"), make_genesis()) as found:
        yield found


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring()


@pytest.fixture
def ledger(chain: EvmChain, keyring: Keyring, clock: FakeClock) -> Iterator[EvmLedger]:
    """The deployed contracts, reverted to their deployment after the test."""
    snapshot = chain.rpc.request("evm_snapshot", [])
    try:
        yield EvmLedger(chain.rpc, chain.deployment, keyring, gas=AnvilGas(), clock=clock, registrar=chain.registrar)
    finally:
        chain.rpc.request("evm_revert", [snapshot])


@pytest.fixture
def make_wallet(ledger: EvmLedger, keyring: Keyring) -> Callable[..., Wallet]:
    def make(name: str = "user", funds: int = 1_000_000) -> Wallet:
        wallet = Wallet(keyring.add(Identity.generate()).identity, ledger)
        wallet.register(name)
        if funds:
            wallet.faucet(funds)
        return wallet

    return make

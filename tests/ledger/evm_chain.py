"""One anvil per test session with the contracts deployed, and a fresh-looking chain for every test.

Each test runs between ``evm_snapshot`` and ``evm_revert``, so it sees the chain exactly as deployed. Identities
a test generates join the test's keyring, as if every user's keystore were on this machine: on an EVM ledger
each sender signs its own Ethereum transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloister.crypto.identity import Identity
from cloister.ledger.evm.deploy import Deployment
from cloister.ledger.evm.devnet import Anvil, deploy_to_anvil, new_key, start_anvil
from cloister.ledger.evm.keys import Keyring
from cloister.ledger.evm.ledger import EvmLedger
from cloister.ledger.evm.rpc import Rpc
from cloister.ledger.evm.transact import AnvilGas
from cloister.ledger.genesis import Genesis


class EvmChain:
    """anvil with the contracts deployed once for the session's usual genesis."""

    def __init__(self, anvil: Anvil, genesis: Genesis) -> None:
        self.anvil = anvil
        self.rpc = Rpc(anvil.url)
        self.registrar = new_key()
        self.deployment = deploy_to_anvil(anvil.url, genesis, self.registrar.address)

    def deployment_for(self, genesis: Genesis) -> Deployment:
        """The session deployment, or (inside the test's snapshot) a new one for a test's own genesis."""
        if genesis == self.deployment.genesis:
            return self.deployment
        return deploy_to_anvil(self.anvil.url, genesis, self.registrar.address)

    @contextmanager
    def ledger(
        self, genesis: Genesis, clock: Callable[[], float], monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[EvmLedger]:
        snapshot = self.rpc.request("evm_snapshot", [])
        try:
            keyring = Keyring()
            generate = Identity.generate
            monkeypatch.setattr(Identity, "generate", classmethod(lambda cls: keyring.add(generate()).identity))
            deployment = self.deployment_for(genesis)
            yield EvmLedger(self.rpc, deployment, keyring, gas=AnvilGas(), clock=clock, registrar=self.registrar)
        finally:
            self.rpc.request("evm_revert", [snapshot])


@contextmanager
def evm_chain(folder: Path, genesis: Genesis) -> Iterator[EvmChain]:
    """anvil on 127.0.0.1, its blocks stamped before ``genesis.time`` so every test's clock runs after them."""
    with start_anvil(timestamp=genesis.time - 3600, log=folder / "anvil.log") as anvil:
        yield EvmChain(anvil, genesis)

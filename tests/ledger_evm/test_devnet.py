"""A devnet's chain folder: first start deploys, a restart finds the same contracts and accounts."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.ledger.conftest import make_genesis

from cloister.crypto.identity import Identity
from cloister.errors import ConfigError
from cloister.ledger.evm.devnet import DevnetChain, load_key
from cloister.ledger.genesis import Genesis
from cloister.ledger.transactions import ChallengeMachine, RegisterProvider
from cloister.ledger.wallet import Wallet


def test_a_devnet_chain_deploys_once_and_survives_a_restart(tmp_path: Path) -> None:
    chain = DevnetChain(tmp_path / "chain")
    identity = Identity.generate()
    calls = []

    def genesis() -> Genesis:
        calls.append(1)
        return make_genesis()

    anvil, deployment = chain.up(genesis)
    try:
        ledger = chain.ledger(anvil.url, [identity])
        wallet = Wallet(identity, ledger)
        wallet.register("alice")
        wallet.send(RegisterProvider("alice", ""))
        assert ledger.registrar is not None and ledger.registrar.address == deployment.registrar
        assert chain.registrar.stat().st_mode & 0o777 == 0o600
    finally:
        anvil.stop()
    anvil, again = chain.up(genesis)
    try:
        assert again == deployment and len(calls) == 1
        ledger = chain.ledger(anvil.url, [identity])
        assert ledger.account(identity.address).nonce == 2
        Wallet(identity, ledger).send(ChallengeMachine())
    finally:
        anvil.stop()


def test_a_damaged_key_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "registrar.key").write_text("not hex")
    with pytest.raises(ConfigError, match="cannot read the key"):
        load_key(tmp_path / "registrar.key")

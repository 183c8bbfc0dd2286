"""What the EVM backend adds to the shared conformance suite: the chain's own failure modes.

Restarts of the node, re-orgs, calls that bypass the client's checks, forged bindings and registrations, a
deployment that does not match, and that the on-chain draw is the Python draw over the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.ledger.attested import challenged_nonce, registration
from tests.ledger.conftest import FakeClock, make_genesis

from cloister.crypto.identity import Identity
from cloister.errors import (
    ConfigError,
    InvalidTransaction,
    KeyNotFound,
    LedgerError,
    NotAuthorized,
    RecordNotFound,
    ServiceUnavailable,
    SignatureRejected,
    VerificationFailed,
)
from cloister.ledger.contracts.assignment import Candidate, draw
from cloister.ledger.evm.deploy import Deployment
from cloister.ledger.evm.devnet import deploy_to_anvil, new_key, start_anvil
from cloister.ledger.evm.keys import Keyring, evm_account
from cloister.ledger.evm.ledger import EvmLedger
from cloister.ledger.evm.rpc import Reverted, Rpc
from cloister.ledger.evm.transact import AnvilGas, FunderGas
from cloister.ledger.records import MachineSpecs, Pricing, Restrictions
from cloister.ledger.transactions import ChallengeMachine, CreateOffer, CreateOrder, RegisterProvider
from cloister.ledger.wallet import Wallet

MakeWallet = Callable[..., Wallet]
FREE = Pricing("free", 0, 0)
SPECS = MachineSpecs(cpu_cores=4, memory_gib=16, gpus=("H100",), disk_gib=100)


def attrs(receipt: Any, kind: str) -> dict[str, Any]:
    (found,) = [e.attrs for e in receipt.events if e.kind == kind]
    return found


def _machine(provider: Wallet) -> str:
    nonce = challenged_nonce([(e.kind, e.attrs) for e in provider.send(ChallengeMachine()).events])
    return str(attrs(provider.send(registration(nonce, SPECS)), "machine.registered")["machine_id"])


def _content(owner: Wallet, kind: str, serial: int) -> str:
    digest = "sha256:" + f"{serial:064x}"
    offer = CreateOffer(kind, kind, "", digest, "file:///blob", 1, FREE, Restrictions(), ())  # type: ignore[arg-type]
    return str(attrs(owner.send(offer), "offer.created")["offer_id"])


def test_the_chain_draws_exactly_what_the_python_contract_would(ledger: EvmLedger, make_wallet: MakeWallet) -> None:
    provider = make_wallet("acme")
    provider.send(RegisterProvider("acme", ""))
    machine_ids = [_machine(provider) for _ in range(5)]
    compute = CreateOffer("compute", "box", "", None, None, None, FREE, Restrictions(), tuple(machine_ids))
    offer_id = attrs(provider.send(compute), "offer.created")["offer_id"]
    owner = make_wallet("owner")
    model, dataset, engine = (_content(owner, kind, i) for i, kind in enumerate(("model", "dataset", "engine")))
    offer = ledger.offer(offer_id)
    candidates = [Candidate(ledger.machine(m), offer) for m in sorted(machine_ids)]
    picks = set()
    for _ in range(6):
        order = CreateOrder("finetune", model, (dataset,), engine, None, {}, 1, 1, 0)
        receipt = owner.send(order)
        order_id = attrs(receipt, "order.created")["order_id"]
        parent = ledger.rpc.request("eth_getBlockByNumber", [hex(receipt.height - 1), False])["hash"]
        busy = {
            m for o in ledger.orders() if o.order_id != order_id and o.state == "pending_grants" for m in o.machines
        }
        free = [c for c in candidates if c.machine.machine_id not in busy]
        (expected,) = draw(bytes.fromhex(parent[2:]), order_id, free, 1)
        assert attrs(receipt, "order.assigned")["machines"] == [expected.machine.machine_id]
        picks.add(expected.machine.machine_id)
        if len(busy) + 1 == len(machine_ids):
            break
    assert len(picks) > 1


def test_events_survive_a_reorg(ledger: EvmLedger, make_wallet: MakeWallet) -> None:
    alice = make_wallet("alice")
    before = ledger.events(limit=1000)
    fork = ledger.rpc.request("evm_snapshot", [])
    orphaned = alice.transfer(alice.address, 7)
    assert ledger.events(after=before.cursor).events == orphaned.events
    ledger.rpc.request("evm_revert", [fork])
    kept = [alice.transfer(alice.address, 8), alice.transfer(alice.address, 9)]
    page = ledger.events(after=before.cursor)
    assert page.events == [e for r in kept for e in r.events]
    assert [e.attrs["amount"] for e in page.events] == [8, 9]
    assert ledger.events(limit=1000).events == before.events + page.events


def test_confirmations_hold_back_the_newest_blocks(chain: Any, ledger: EvmLedger, keyring: Keyring) -> None:
    careful = EvmLedger(chain.rpc, chain.deployment, keyring, confirmations=2)
    wallet = Wallet(keyring.add(Identity.generate()).identity, ledger)
    wallet.register("alice")
    assert careful.events().events == []
    wallet.faucet(5)
    wallet.faucet(6)
    assert [e.kind for e in careful.events().events] == ["account.registered"]
    assert len(ledger.events().events) == 3


def test_a_sender_without_a_key_here_is_told_so(ledger: EvmLedger, make_wallet: MakeWallet) -> None:
    alice = make_wallet("alice")
    elsewhere = EvmLedger(ledger.rpc, ledger.deployment, Keyring())
    with pytest.raises(KeyNotFound, match="holds no key for account"):
        Wallet(ledger.keyring.signer(alice.address).identity, elsewhere).faucet(1)
    with pytest.raises(RecordNotFound, match=r"account\.register first"):
        Wallet(Identity.generate(), elsewhere).faucet(1)


def test_calls_that_bypass_the_client_are_still_refused(ledger: EvmLedger, make_wallet: MakeWallet) -> None:
    provider = make_wallet("acme")
    provider.send(RegisterProvider("acme", ""))
    account = evm_account(ledger.keyring.signer(provider.address).identity)
    nonce = ledger.account(provider.address).nonce + 1

    def call(function: str, *args: Any) -> None:
        try:
            ledger.sender.send(account, ledger.address, ledger.abi.encode_call(function, (nonce, *args)))
        except Reverted as exc:
            raise ledger.rejection(exc) from None

    with pytest.raises(InvalidTransaction, match="name"):
        call("registerProvider", "", "")
    with pytest.raises(InvalidTransaction, match="amount"):
        call("faucetDrip", 0)
    bad_offer = (0, "m", "", bytes(32), "file:///x", 1, (0, 0, 0), (["bad token!"], [], [], 0), [])
    with pytest.raises(InvalidTransaction, match=r"restrictions\.platforms"):
        call("createOffer", bytes(32), bad_offer)
    with pytest.raises(InvalidTransaction, match="pricing"):
        call("createOffer", bytes(32), (0, "m", "", bytes(32), "file:///x", 1, (1, 0, 0), ([], [], [], 0), []))
    call("challengeMachine", bytes(32))
    nonce += 1
    fields = ("eu", b"tcb", "sim", 1, 1, 1, [], bytes(32), bytes(32), bytes(32), 1)
    with pytest.raises(VerificationFailed, match="registrar"):
        call("registerMachine", bytes(32), fields, bytes(65))
    forged = new_key().unsafe_sign_hash(bytes(32)).signature
    with pytest.raises(VerificationFailed, match="registrar"):
        call("registerMachine", bytes(32), fields, bytes(forged))
    with pytest.raises(LedgerError, match="without a Cloister error"):
        try:
            ledger.sender.send(account, ledger.address, b"\x12\x34\x56\x78")
        except Reverted as exc:
            raise ledger.rejection(exc) from None


def test_an_account_bound_by_someone_else_is_not_trusted(ledger: EvmLedger) -> None:
    victim = Identity.generate()
    squatter = new_key()
    AnvilGas().top_up(ledger.rpc, squatter.address)
    public = victim.public
    data = ledger.abi.encode_call("registerAccount", (1, public.signing_key, public.sealing_key, "me", bytes(64)))
    ledger.sender.send(squatter, ledger.address, data)
    with pytest.raises(SignatureRejected, match="never bound"):
        ledger.account(victim.address)


def test_machines_are_registered_only_with_a_registrar(ledger: EvmLedger, make_wallet: MakeWallet) -> None:
    provider = make_wallet("acme")
    provider.send(RegisterProvider("acme", ""))
    nonce = challenged_nonce([(e.kind, e.attrs) for e in provider.send(ChallengeMachine()).events])
    without = EvmLedger(ledger.rpc, ledger.deployment, ledger.keyring)
    with pytest.raises(ConfigError, match="registrar"):
        Wallet(ledger.keyring.signer(provider.address).identity, without).send(registration(nonce, SPECS))
    intruder = make_wallet("intruder")
    with pytest.raises(NotAuthorized, match=r"provider\.register first"):
        intruder.send(registration(nonce, SPECS))


def test_a_deployment_of_another_genesis_or_chain_is_refused(ledger: EvmLedger) -> None:
    deployment = ledger.deployment
    other = Deployment.from_json({**deployment.to_json(), "genesis": {**deployment.to_json()["genesis"], "time": 1}})
    with pytest.raises(ConfigError, match="genesis"):
        EvmLedger(ledger.rpc, other, Keyring())
    nowhere = Deployment.from_json({**deployment.to_json(), "address": new_key().address})
    with pytest.raises(ConfigError, match="no Cloister contract"):
        EvmLedger(ledger.rpc, nowhere, Keyring())
    with pytest.raises(ConfigError, match="serves chain"):
        EvmLedger(ledger.rpc, Deployment.from_json({**deployment.to_json(), "eth_chain_id": 1}), Keyring())
    for broken in ({}, {**deployment.to_json(), "address": "nowhere"}, {**deployment.to_json(), "genesis": 5}):
        with pytest.raises(ConfigError, match="not a Cloister EVM deployment"):
            Deployment.from_json(broken)


def test_an_unreachable_node_is_service_unavailable() -> None:
    with pytest.raises(ServiceUnavailable, match="did not answer"):
        Rpc("http://127.0.0.1:9", retry_for=0.2).request("eth_blockNumber", [])


def test_a_restarted_node_loses_nothing_acknowledged(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    genesis = make_genesis()
    anvil = start_anvil(state=state, timestamp=genesis.time - 3600, log=tmp_path / "anvil.log")
    try:
        registrar = new_key()
        deployment = deploy_to_anvil(anvil.url, genesis, registrar.address)
        keyring = Keyring()
        ledger = EvmLedger(Rpc(anvil.url), deployment, keyring, gas=AnvilGas(), clock=FakeClock())
        alice = Wallet(keyring.add(Identity.generate()).identity, ledger)
        alice.register("alice")
        acknowledged = [alice.faucet(n) for n in (1, 2, 3)]
        seen = ledger.events(limit=1000)
        anvil.stop()
        anvil = start_anvil(port=anvil.port, state=state, log=tmp_path / "anvil.log")
        assert ledger.account(alice.address).balance == 6
        assert ledger.head().height >= acknowledged[-1].height
        later = alice.faucet(4)
        assert ledger.events(after=seen.cursor).events == later.events
        fresh = EvmLedger(Rpc(anvil.url), deployment, Keyring())
        assert fresh.events(limit=1000).events == seen.events + later.events
    finally:
        anvil.stop()


def test_a_funder_pays_for_new_accounts_gas(chain: Any, ledger: EvmLedger, keyring: Keyring) -> None:
    funder = new_key()
    AnvilGas(wei=10**19).top_up(ledger.rpc, funder.address)
    paying = EvmLedger(ledger.rpc, ledger.deployment, keyring)
    paying.sender.gas = FunderGas(paying.sender, funder, wei=10**17)
    identity = keyring.add(Identity.generate()).identity
    Wallet(identity, paying).register("alice")
    spent = 10**19 - int(ledger.rpc.request("eth_getBalance", [funder.address, "latest"]), 16)
    left = int(ledger.rpc.request("eth_getBalance", [evm_account(identity).address, "latest"]), 16)
    assert spent > 10**17 and 0 < left < 10**17

"""Deployments on the EVM backend, beyond the shared suite: the chain's draw of replicas equals the Python draw,
and what the registrar co-signs (endpoints, dispute verdicts) cannot be forged, altered or replayed by a call
that bypasses the client; a deployment whose stored terms disagree with its params is refused by readers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from tests.ledger.deployed import REQUEST, Fleet
from tests.ledger.test_contracts import Market, attrs

from cloister.crypto.identity import Identity
from cloister.errors import ConfigError, MalformedInput, NotAuthorized, RecordExists, VerificationFailed
from cloister.ledger.contracts.assignment import Candidate, draw
from cloister.ledger.evm import codec
from cloister.ledger.evm.keys import Keyring, evm_account
from cloister.ledger.evm.ledger import EvmLedger
from cloister.ledger.evm.rpc import Reverted
from cloister.ledger.protocol import TxReceipt
from cloister.ledger.transactions import CreateOrder, OpenDispute
from cloister.ledger.wallet import Wallet

WRONG = "sha256:" + "bd" * 32


@pytest.fixture
def make_wallet(ledger: EvmLedger, keyring: Keyring, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Wallet]:
    """Registered wallets funded well enough to stake for serving; every identity a test generates (the
    fleet's gateway too) joins the keyring, as if every keystore were on this machine."""
    generate = Identity.generate
    monkeypatch.setattr(Identity, "generate", classmethod(lambda cls: keyring.add(generate()).identity))

    def make(name: str = "user", funds: int = 1_000_000_000) -> Wallet:
        wallet = Wallet(Identity.generate(), ledger)
        wallet.register(name)
        wallet.faucet(funds)
        return wallet

    return make


@pytest.fixture
def fleet(ledger: EvmLedger, make_wallet: Callable[..., Wallet]) -> Fleet:
    return Fleet(Market(ledger, make_wallet))


def _calldata(ledger: EvmLedger, receipt: TxReceipt) -> tuple[str, list[Any]]:
    """The contract function and arguments of the call that a receipt's block carried, as anyone sees it."""
    block = ledger.rpc.request("eth_getBlockByNumber", [hex(receipt.height), True])
    (tx,) = [t for t in block["transactions"] if str(t["to"]).lower() == ledger.address.lower()]
    data = bytes.fromhex(tx["input"][2:])
    (function,) = [f for f in ledger.abi.functions.values() if f.selector == data[:4]]
    return function.name, list(abi_decode(function.inputs, data[4:]))


def _resend(ledger: EvmLedger, wallet: Wallet, function: str, args: list[Any]) -> None:
    """Send ``function(args)`` from ``wallet`` with its next nonce, around the client's checks."""
    account = evm_account(ledger.keyring.signer(wallet.address).identity)
    nonce = ledger.account(wallet.address).nonce + 1
    try:
        ledger.sender.send(account, ledger.address, ledger.abi.encode_call(function, (nonce, *args[1:])))
    except Reverted as exc:
        raise ledger.rejection(exc) from None


def test_the_chain_draws_replicas_exactly_as_the_python_contract_would(fleet: Fleet, ledger: EvmLedger) -> None:
    replicas = [fleet.replica() for _ in range(5)]
    candidates = [Candidate(ledger.machine(r.machine_id), ledger.offer(r.compute_offer)) for r in replicas]
    candidates.sort(key=lambda c: c.machine.machine_id)
    receipt = fleet.market.developer.send(fleet.create(3))
    order_id = attrs(receipt, "order.created")["order_id"]
    parent = ledger.rpc.request("eth_getBlockByNumber", [hex(receipt.height - 1), False])["hash"]
    expected = draw(bytes.fromhex(parent[2:]), order_id, candidates, 3, one_offer=False)
    assigned = attrs(receipt, "order.assigned")
    assert assigned["machines"] == [c.machine.machine_id for c in expected]
    assert assigned["compute_offer"] == expected[0].offer.offer_id
    seats = {c.machine_id: c.compute_offer for c in ledger.checkpoints(order_id)}
    assert seats == {c.machine.machine_id: c.offer.offer_id for c in expected}


def test_an_endpoint_is_registered_only_as_the_registrar_checked_it(fleet: Fleet, ledger: EvmLedger) -> None:
    fleet.replica()
    fleet.replica()
    order_id = fleet.deploy(1)
    fleet.grant_missing(order_id)
    (machine_id,) = ledger.order(order_id).machines
    owner = fleet.replicas[machine_id].provider
    (rival,) = [r.provider for r in fleet.replicas.values() if r.machine_id != machine_id]
    without = EvmLedger(ledger.rpc, ledger.deployment, ledger.keyring)
    with pytest.raises(ConfigError, match="registrar"):
        Wallet(ledger.keyring.signer(owner.address).identity, without).send(fleet.endpoint(order_id, machine_id))
    receipt = fleet.publish(order_id, machine_id, url="http://127.0.0.1:9000")
    function, args = _calldata(ledger, receipt)
    assert (function, args[3]) == ("registerEndpoint", "http://127.0.0.1:9000")
    with pytest.raises(VerificationFailed, match="registrar"):  # another URL under the checked signature
        _resend(ledger, owner, function, [*args[:3], "http://attacker.example", *args[4:]])
    with pytest.raises(VerificationFailed, match="registrar"):
        _resend(ledger, owner, function, [*args[:-1], bytes(65)])
    with pytest.raises(NotAuthorized, match="belongs to provider"):
        _resend(ledger, rival, function, args)
    _resend(ledger, owner, function, args)  # replaying the very same endpoint changes nothing
    (endpoint,) = ledger.endpoints(order_id)
    assert (endpoint.url, endpoint.removed_at) == ("http://127.0.0.1:9000", None)


def test_a_verdict_cannot_be_forged_or_replayed(fleet: Fleet, ledger: EvmLedger) -> None:
    for _ in range(3):
        fleet.replica()
    order_id = fleet.deploy(3)
    fleet.serve(order_id)
    a, b, liar = ledger.order(order_id).machines
    commitments = (
        fleet.commitment(order_id, a),
        fleet.commitment(order_id, b),
        fleet.commitment(order_id, liar, WRONG),
    )
    receipt = fleet.gateway.send(OpenDispute(order_id, REQUEST, commitments))
    assert attrs(receipt, "dispute.opened")["slashed"] == [liar]
    function, args = _calldata(ledger, receipt)
    assert function == "openDispute"
    with pytest.raises(RecordExists, match="already disputed"):
        _resend(ledger, fleet.gateway, function, [args[0], bytes(32), *args[2:]])
    developer = fleet.market.developer
    with pytest.raises(NotAuthorized, match="gateway"):
        _resend(ledger, developer, function, [args[0], bytes(32), *args[2:]])
    fields = list(args[2])
    fields[1] = bytes.fromhex("ee" * 32)  # another request, under the verdict signed for this one
    fields[4], fields[6] = fields[6], fields[4]  # and the liar made the majority
    with pytest.raises(VerificationFailed, match="registrar"):
        _resend(ledger, fleet.gateway, function, [args[0], bytes(32), tuple(fields), args[3]])
    (dispute,) = ledger.disputes(order_id)
    assert (dispute.slashed, dispute.commitments) == ((liar,), commitments)


def test_a_deployment_whose_stored_terms_disagree_with_its_params_is_refused(fleet: Fleet, ledger: EvmLedger) -> None:
    fleet.replica()
    payload: CreateOrder = fleet.create(1)
    call = codec.call_of(payload)
    (order,) = call.args
    forged = (*order[:11], codec.address_bytes(fleet.market.developer.address), order[12])
    _resend(ledger, fleet.market.developer, call.function, [None, bytes.fromhex("ab" * 32), forged])
    with pytest.raises(MalformedInput, match="not created through a client"):
        ledger.orders()

"""`contracts.execute` as a pure function over a MemoryState: envelope checks, atomicity and determinism."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace
from typing import Any

import pytest
from tests.ledger import attested

from cloister.crypto.identity import Identity
from cloister.errors import (
    InvalidState,
    InvalidTransaction,
    NoEligibleMachine,
    NonceMismatch,
    NotAuthorized,
    RecordExists,
    RecordNotFound,
    SignatureRejected,
    WrongChain,
)
from cloister.ledger.contracts import HANDLERS, BlockContext, Outcome, execute
from cloister.ledger.contracts.assignment import Candidate, draw
from cloister.ledger.envelope import SignedTransaction, Transaction
from cloister.ledger.genesis import Genesis
from cloister.ledger.queries import StateReader
from cloister.ledger.records import MAX_AMOUNT, Machine, MachineSpecs, Offer, Pricing, Restrictions
from cloister.ledger.state import MemoryState
from cloister.ledger.transactions import (
    PAYLOAD_TYPES,
    ChallengeMachine,
    CreateOffer,
    CreateOrder,
    DepositStake,
    FaucetDrip,
    Payload,
    RegisterAccount,
    RegisterProvider,
    Transfer,
)

GENESIS = Genesis("cloister-test", 1_000, attested.params(faucet_limit=10**12, heartbeat_timeout=120))
DIGESTS = {kind: "sha256:" + hashlib.sha256(kind.encode()).hexdigest() for kind in ("model", "dataset", "engine")}


class Chain:
    """Applies transactions to a MemoryState as a backend would, with block time and randomness the test sets."""

    def __init__(self, genesis: Genesis = GENESIS) -> None:
        self.genesis = genesis
        self.state = MemoryState()
        self.read = StateReader(self.state)
        self.height = 0
        self.time = genesis.time
        self.randomness = b"\x00" * 32
        self.nonces: dict[str, int] = {}

    def sign(self, who: Identity, payload: Payload, *, nonce: int | None = None) -> SignedTransaction:
        nonce = self.nonces.get(who.address, 0) + 1 if nonce is None else nonce
        tx = Transaction(payload.TYPE, payload.to_payload(), who.address, nonce, self.genesis.chain_id)
        return SignedTransaction.sign(who, tx)

    def context(self) -> BlockContext:
        return BlockContext(self.height + 1, self.time, self.randomness)

    def apply(self, signed: SignedTransaction) -> Outcome:
        outcome = execute(self.state, signed, self.context(), self.genesis)
        self.state.commit(outcome.writes)
        self.height += 1
        self.nonces[signed.tx.sender] = signed.tx.nonce
        return outcome

    def run(self, who: Identity, payload: Payload) -> Outcome:
        return self.apply(self.sign(who, payload))

    def account(self, funds: int = 0) -> Identity:
        who = Identity.generate()
        self.run(who, RegisterAccount("someone", who.public.sealing_key))
        if funds:
            self.run(who, FaucetDrip(funds))
        return who

    def rejects(self, signed: SignedTransaction, error: type[Exception], match: str | None = None) -> None:
        """The transaction is refused with ``error`` and leaves the state exactly as it was."""
        before = copy.deepcopy(self.state.data)
        with pytest.raises(error, match=match):
            execute(self.state, signed, self.context(), self.genesis)
        assert self.state.data == before


def created(outcome: Outcome, kind: str, attr: str) -> Any:
    return next(attrs[attr] for event, attrs in outcome.events if event == kind)


def test_every_transaction_type_has_a_handler() -> None:
    assert set(HANDLERS) == set(PAYLOAD_TYPES.values())


def test_accepted_transactions_bump_the_nonce_by_one() -> None:
    chain = Chain()
    alice = chain.account(funds=10)
    assert chain.read.account(alice.address).nonce == 2
    bob = chain.account()
    chain.run(alice, Transfer(bob.address, 4))
    assert chain.read.account(alice.address).nonce == 3
    assert chain.read.account(bob.address).nonce == 1
    assert (chain.read.account(alice.address).balance, chain.read.account(bob.address).balance) == (6, 4)


def test_signature_chain_and_sender_are_checked_before_anything_else() -> None:
    chain = Chain()
    alice, bob = chain.account(funds=10), chain.account()
    good = chain.sign(alice, Transfer(bob.address, 1))
    chain.rejects(replace(good, signature=bytes(64)), SignatureRejected)
    chain.rejects(replace(good, public_key=bob.public.signing_key), SignatureRejected, "does not belong")
    forged = replace(good, tx=replace(good.tx, payload={"to": alice.address, "amount": 1}))
    chain.rejects(forged, SignatureRejected)
    other_chain = SignedTransaction.sign(alice, replace(good.tx, chain_id="cloister-other"))
    chain.rejects(other_chain, WrongChain, "cloister-other")
    stranger = Identity.generate()
    chain.rejects(chain.sign(stranger, Transfer(bob.address, 1)), RecordNotFound, "account.register first")


def test_replays_and_gaps_are_nonce_mismatches() -> None:
    chain = Chain()
    alice, bob = chain.account(funds=10), chain.account()
    first = chain.sign(alice, Transfer(bob.address, 1))
    chain.apply(first)
    chain.rejects(first, NonceMismatch, r"expected 4\): a replay")
    chain.rejects(chain.sign(alice, Transfer(bob.address, 1), nonce=5), NonceMismatch, "a gap")
    newcomer = Identity.generate()
    register = RegisterAccount("late", newcomer.public.sealing_key)
    chain.rejects(chain.sign(newcomer, register, nonce=2), NonceMismatch, r"expected 1\)")
    chain.rejects(chain.sign(alice, RegisterAccount("again", alice.public.sealing_key)), RecordExists)


def test_unknown_types_and_malformed_payloads_are_invalid() -> None:
    chain = Chain()
    alice = chain.account(funds=10)
    for tx_type, payload in (("mint", {"amount": 1}), ("transfer", {"to": alice.address}), ("faucet.drip", {})):
        tx = Transaction(tx_type, payload, alice.address, 3, GENESIS.chain_id)
        chain.rejects(SignedTransaction.sign(alice, tx), InvalidTransaction)


def test_faucet_limits() -> None:
    chain = Chain(replace(GENESIS, params=replace(GENESIS.params, faucet_limit=100)))
    alice = chain.account(funds=100)
    chain.rejects(chain.sign(alice, FaucetDrip(101)), NotAuthorized, "at most 100")
    closed = Chain(replace(GENESIS, params=replace(GENESIS.params, faucet_limit=0)))
    bob = closed.account()
    closed.rejects(closed.sign(bob, FaucetDrip(1)), NotAuthorized, "no faucet")


def test_balances_stay_within_64_bits() -> None:
    chain = Chain(replace(GENESIS, params=replace(GENESIS.params, faucet_limit=MAX_AMOUNT)))
    alice = chain.account(funds=MAX_AMOUNT)
    chain.rejects(chain.sign(alice, FaucetDrip(1)), InvalidState, "largest balance")


def test_same_inputs_give_the_same_outcome() -> None:
    chain = Chain()
    alice, bob = chain.account(funds=10), chain.account()
    signed = chain.sign(alice, Transfer(bob.address, 3))
    twin = MemoryState()
    twin.commit(copy.deepcopy(chain.state.data))
    assert execute(chain.state, signed, chain.context(), GENESIS) == execute(twin, signed, chain.context(), GENESIS)


# --- assignment ----------------------------------------------------------------------------------------------


class Market:
    """One provider with ``machines`` machines in one compute offer, one owner of a model, dataset and engine."""

    FREE = Pricing("free", 0, 0)

    def __init__(self, chain: Chain, machines: int) -> None:
        self.chain = chain
        self.provider = chain.account(funds=1_000)
        chain.run(self.provider, RegisterProvider("acme", ""))
        self.machines = [self._machine(i) for i in range(machines)]
        compute = CreateOffer("compute", "box", "", None, None, None, self.FREE, Restrictions(), tuple(self.machines))
        chain.run(self.provider, compute)
        self.owner = chain.account()
        self.offers = {kind: self._content(kind, digest) for kind, digest in DIGESTS.items()}
        self.developer = chain.account(funds=1_000)

    def _machine(self, i: int) -> str:
        nonce = attested.challenged_nonce(self.chain.run(self.provider, ChallengeMachine()).events)
        register = attested.registration(nonce, MachineSpecs(4, 16, (), 100 + i), "eu")
        return str(created(self.chain.run(self.provider, register), "machine.registered", "machine_id"))

    def _content(self, kind: Any, digest: str) -> str:
        offer = CreateOffer(kind, kind, "", digest, "file:///x", 1, self.FREE, Restrictions(), ())
        return str(created(self.chain.run(self.owner, offer), "offer.created", "offer_id"))

    def order(self) -> CreateOrder:
        o = self.offers
        return CreateOrder("finetune", o["model"], (o["dataset"],), o["engine"], None, {}, 1, 1, 0)


def test_draw_follows_the_published_formula() -> None:
    randomness, order_id = bytes(range(32)), "or-0123456789abcdef"
    offer = Offer(
        "of-0000000000000000",
        "cl" + "00" * 20,
        "compute",
        "box",
        "",
        None,
        None,
        None,
        Pricing("free", 0, 0),
        Restrictions(),
        ("mc-0000000000000000",),
        0,
        True,
    )
    specs = MachineSpecs(1, 1, (), 1)
    verdict = (DIGESTS["model"], "simulated")
    machines = [
        Machine(f"mc-{i:016x}", offer.owner, "sim", "eu", specs, b"e", b"1" * 32, b"2" * 32, 0, 0, True, *verdict)
        for i in range(5)
    ]
    candidates = [Candidate(machine, offer) for machine in machines]
    seed = hashlib.sha256(randomness + order_id.encode()).digest()
    first = int.from_bytes(hashlib.sha256(seed + b"\x00\x00\x00\x00").digest(), "big") % 5
    second = int.from_bytes(hashlib.sha256(seed + b"\x00\x00\x00\x01").digest(), "big") % 4
    remaining = list(candidates)
    expected = [remaining.pop(first), remaining.pop(second)]
    picked = draw(randomness, order_id, candidates, 2)
    assert picked == expected and len({c.machine.machine_id for c in picked}) == 2


def test_assignment_is_a_function_of_state_and_randomness() -> None:
    chain = Chain()
    market = Market(chain, machines=8)
    signed = chain.sign(market.developer, market.order())
    outcomes = {}
    for seed in range(16):
        chain.randomness = hashlib.sha256(b"block %d" % seed).digest()
        first = execute(chain.state, signed, chain.context(), GENESIS)
        assert execute(chain.state, signed, chain.context(), GENESIS) == first
        outcomes[seed] = tuple(created(first, "order.assigned", "machines"))
    assert len(set(outcomes.values())) > 1, "different randomness never changed the assignment"


def test_provider_stake_gates_assignment() -> None:
    chain = Chain(replace(GENESIS, params=replace(GENESIS.params, faucet_limit=10**6, min_provider_stake=500)))
    market = Market(chain, machines=1)
    chain.rejects(chain.sign(market.developer, market.order()), NoEligibleMachine, "1 provider stake below 500")
    chain.run(market.provider, DepositStake(500))
    outcome = chain.run(market.developer, market.order())
    assert created(outcome, "order.assigned", "machines") == market.machines

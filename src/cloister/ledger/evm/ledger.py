"""The :class:`~cloister.ledger.protocol.Ledger` on an EVM chain: the Cloister contract over JSON-RPC.

``submit`` checks the signed envelope exactly as the embedded contracts do (signature, chain, payload), then
sends the payload as a contract call from the sender's own Ethereum key (:mod:`.keys`). The contract enforces
the nonce and every rule; a rejection is found by the gas estimate, before anything is sent, and raised as the
same typed error the embedded ledger raises. Reads are ``eth_call`` views parsed into the same records; events
come from the chain's logs through a re-org safe index (:mod:`.events`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32
from eth_utils.crypto import keccak

from cloister.crypto.digest import parse_digest
from cloister.errors import CloisterError, ConfigError, InvalidTransaction, KeyNotFound, RecordNotFound, WrongChain
from cloister.ledger.contracts.call import BlockContext
from cloister.ledger.contracts.call import Call as ContractCall
from cloister.ledger.contracts.machines import register_machine
from cloister.ledger.envelope import SignedTransaction, Transaction
from cloister.ledger.evm import codec, reverts
from cloister.ledger.evm.abi import Abi
from cloister.ledger.evm.compile import CONTRACT, LIBRARIES, load_artifact
from cloister.ledger.evm.deploy import Deployment
from cloister.ledger.evm.events import EventDecoder, EventIndex
from cloister.ledger.evm.keys import Keyring, Signer, sign_binding, verify_binding
from cloister.ledger.evm.rpc import Reverted, Rpc
from cloister.ledger.evm.state import ChainState
from cloister.ledger.evm.transact import GasSource, Sender
from cloister.ledger.genesis import ContractParams
from cloister.ledger.protocol import EventPage, Head, TxReceipt
from cloister.ledger.queries import StateReader
from cloister.ledger.records import (
    MACHINE_ID_PREFIX,
    Account,
    Challenge,
    Checkpoint,
    KeyGrant,
    Machine,
    Offer,
    Order,
    Provider,
    Refusal,
    challenge_key,
    derive_id,
    machine_key,
)
from cloister.ledger.transactions import RegisterAccount, RegisterMachine, parse_payload

ATTESTATION_TAG = "cloister/evm-attestation/v1"
"""Domain of the registrar's signature over an appraised registration (see contracts/Machines.sol)."""


def contract_abi() -> Abi:
    units = load_artifact()["contracts"]
    return Abi(units[name]["abi"] for name in (CONTRACT, *LIBRARIES))


class EvmLedger:
    """The ledger of one Cloister deployment, acting for the identities in ``keyring``."""

    def __init__(
        self,
        rpc: Rpc,
        deployment: Deployment,
        keyring: Keyring,
        *,
        gas: GasSource | None = None,
        clock: Callable[[], float] | None = None,
        confirmations: int = 0,
        registrar: LocalAccount | None = None,
    ) -> None:
        self.rpc = rpc
        self.registrar = registrar
        self.deployment = deployment
        self.keyring = keyring
        self.address = deployment.address
        self.abi = contract_abi()
        self.sender = Sender(rpc, deployment.eth_chain_id, clock=clock, gas=gas)
        self._decoder = EventDecoder(self.abi, deployment.address)
        self._index = EventIndex(rpc, self._decoder, deployment.block, confirmations=confirmations)
        self._check_deployment()
        self.params = self._params()
        self._state = ChainState(self._view, self._verify_binding)
        self._reader = StateReader(self._state)

    @classmethod
    def connect(cls, url: str, deployment: Deployment, keyring: Keyring, **options: Any) -> EvmLedger:
        return cls(Rpc(url), deployment, keyring, **options)

    def _check_deployment(self) -> None:
        """Refuse to talk to a node of another chain, or to a contract deployed with another genesis."""
        eth_chain_id = int(self.rpc.request("eth_chainId", []), 16)
        if eth_chain_id != self.deployment.eth_chain_id:
            raise ConfigError(
                f"the node at {self.rpc.url} serves chain {eth_chain_id}, but the deployment is on chain "
                f"{self.deployment.eth_chain_id}; point the client at the right node"
            )
        code = self.rpc.request("eth_getCode", [self.address, "latest"])
        genesis_hash = self._view("genesisHash", ())[0] if code not in (None, "0x") else b""
        if genesis_hash != parse_digest(self.deployment.genesis.hash):
            raise ConfigError(
                f"no Cloister contract with this deployment's genesis at {self.address} on {self.rpc.url}; "
                "deploy the contracts (`cloister ledger deploy`) or use the deployment record of this chain"
            )

    def _params(self) -> ContractParams:
        ((faucet, timeout, stake, ttl),) = self._view("contractParams", ())
        return dataclasses.replace(
            self.deployment.genesis.params,
            faucet_limit=faucet,
            heartbeat_timeout=timeout,
            min_provider_stake=stake,
            challenge_ttl=ttl,
        )

    @property
    def chain_id(self) -> str:
        return self.deployment.genesis.chain_id

    # --- writes --------------------------------------------------------------------------------------------

    def submit(self, signed: SignedTransaction) -> TxReceipt:
        """Send ``signed`` as a contract call from its sender's Ethereum key; a rejection records nothing."""
        signed.verify()
        tx = signed.tx
        if tx.chain_id != self.chain_id:
            raise WrongChain(
                f"the transaction is for chain {tx.chain_id!r} but this ledger is {self.chain_id!r}; "
                "point the client at the ledger it was meant for"
            )
        try:
            payload = parse_payload(tx.type, tx.payload)
            signer = self.keyring.signer(tx.sender)
        except (InvalidTransaction, KeyNotFound):
            self._check_envelope(tx)
            raise
        if isinstance(payload, RegisterAccount):
            binding = sign_binding(signer.identity, self.chain_id, self.address, signer.account.address)
            name, args = "registerAccount", (signed.public_key, payload.sealing_key, payload.name, binding)
        elif isinstance(payload, RegisterMachine):
            name, args = "registerMachine", self._appraised(signed, payload)
        else:
            call = codec.call_of(payload)
            name, args = call.function, ((parse_digest(signed.hash),) if call.creates else ()) + call.args
        receipt = self._transact(signer, tx, self.abi.encode_call(name, (tx.nonce, *args)))
        events = [e for e in map(self._decoder.decode, receipt["logs"]) if e is not None]
        return TxReceipt(signed.hash, int(receipt["blockNumber"], 16), events)

    def _check_envelope(self, tx: Transaction) -> None:
        """What the contract would refuse first (unknown sender, wrong nonce), for a payload it never sees."""
        try:
            nonce = self.account(tx.sender).nonce
        except RecordNotFound:
            if tx.type == RegisterAccount.TYPE:
                return
            raise reverts.rejection("SenderNotRegistered", ("",), self._context(tx)) from None
        if tx.nonce != nonce + 1:
            raise reverts.rejection("NonceMismatch", (nonce + 1, tx.nonce), self._context(tx))

    def _appraised(self, signed: SignedTransaction, payload: RegisterMachine) -> tuple[Any, ...]:
        """Run the embedded contract's registration over the chain's state, so the TCB is appraised by the same
        code against the genesis policy at ledger time; the registrar then signs what it concluded."""
        if self.registrar is None:
            raise ConfigError(
                "machine.register on an EVM ledger needs the network's attestation registrar to appraise and "
                "co-sign the TCB; give the ledger client the registrar key (the devnet's is in its folder)"
            )
        self._check_envelope(signed.tx)
        head = self.head()
        ctx = BlockContext(head.height + 1, self._next_time(head), bytes.fromhex(head.hash[2:]))
        call = ContractCall(self._state, signed, ctx, self.params)
        register_machine(call, payload)
        writes = call.state.writes
        machine = Machine.from_json(writes[machine_key(derive_id(MACHINE_ID_PREFIX, signed.hash))])
        challenge = Challenge.from_json(writes[challenge_key(signed.tx.sender)])
        tx_hash = parse_digest(signed.hash)
        fields = codec.machine_input(machine)
        input_type = self.abi.functions["registerMachine"].inputs[2]
        statement = keccak(
            abi_encode(
                ["string", "address", "bytes20", "bytes32", "bytes32", "bytes32"],
                [
                    ATTESTATION_TAG,
                    self.address,
                    codec.address_bytes(signed.tx.sender),
                    challenge.nonce,
                    tx_hash,
                    keccak(abi_encode([input_type], [fields])),
                ],
            )
        )
        return tx_hash, fields, bytes(self.registrar.unsafe_sign_hash(Hash32(statement)).signature)

    def _next_time(self, head: Head) -> int:
        """The time the next block will most likely carry: the test or devnet clock, or the wall clock."""
        clock = self.sender.clock
        return int(clock()) if clock is not None else max(head.time, int(time.time()))

    def _transact(self, signer: Signer, tx: Transaction, data: bytes) -> dict[str, Any]:
        try:
            return self.sender.send(signer.account, self.address, data)
        except Reverted as exc:
            raise self.rejection(exc, tx) from None

    def _context(self, tx: Transaction | None) -> reverts.Context:
        return reverts.Context(tx, self.params, self.offer)

    def rejection(self, exc: Reverted, tx: Transaction | None = None) -> CloisterError:
        """The typed error (worded as the embedded contracts word it) for a revert of this contract."""
        decoded = self.abi.decode_error(exc.data)
        if decoded is None:
            return reverts.unknown_revert(exc.message)
        return reverts.rejection(*decoded, self._context(tx))

    # --- reads ---------------------------------------------------------------------------------------------

    def _view(self, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        request = {"to": self.address, "data": "0x" + self.abi.encode_call(name, args).hex()}
        try:
            result = self.rpc.request("eth_call", [request, "latest"])
        except Reverted as exc:
            raise self.rejection(exc, None) from None
        return self.abi.decode_output(name, bytes.fromhex(str(result)[2:]))

    def _verify_binding(self, eth: str, signing_key: bytes, binding: bytes) -> None:
        verify_binding(signing_key, self.chain_id, self.address, eth, binding)

    def head(self) -> Head:
        block = self.rpc.request("eth_getBlockByNumber", ["latest", False])
        return Head(int(block["number"], 16), str(block["hash"]), int(block["timestamp"], 16))

    def events(self, *, after: int = 0, limit: int = 100) -> EventPage:
        return self._index.page(after, limit)

    def account(self, address: str) -> Account:
        return self._reader.account(address)

    def provider(self, address: str) -> Provider:
        return self._reader.provider(address)

    def machine(self, machine_id: str) -> Machine:
        return self._reader.machine(machine_id)

    def machines(self, *, provider: str | None = None) -> list[Machine]:
        return self._reader.machines(provider=provider)

    def offer(self, offer_id: str) -> Offer:
        return self._reader.offer(offer_id)

    def offers(
        self,
        *,
        kind: str | None = None,
        owner: str | None = None,
        content_digest: str | None = None,
        include_retired: bool = False,
    ) -> list[Offer]:
        return self._reader.offers(
            kind=kind, owner=owner, content_digest=content_digest, include_retired=include_retired
        )

    def order(self, order_id: str) -> Order:
        return self._reader.order(order_id)

    def orders(
        self, *, owner: str | None = None, machine_id: str | None = None, state: str | None = None
    ) -> list[Order]:
        return self._reader.orders(owner=owner, machine_id=machine_id, state=state)

    def grants(self, order_id: str) -> list[KeyGrant]:
        return self._reader.grants(order_id)

    def refusals(self, order_id: str) -> list[Refusal]:
        return self._reader.refusals(order_id)

    def checkpoints(self, order_id: str) -> list[Checkpoint]:
        return self._reader.checkpoints(order_id)

    # --- lifetime ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release: the node keeps the state; here for symmetry with the other backends."""

    def __enter__(self) -> EvmLedger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

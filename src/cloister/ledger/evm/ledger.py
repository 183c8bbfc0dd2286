"""The :class:`~cloister.ledger.protocol.Ledger` on an EVM chain: the Cloister contract over JSON-RPC.

``submit`` checks the signed envelope exactly as the embedded contracts do (signature, chain, payload), then
sends the payload as a contract call from the sender's own Ethereum key (:mod:`.keys`). The contract enforces
the nonce and every rule; a rejection is found by the gas estimate, before anything is sent, and raised as the
same typed error the embedded ledger raises. What the EVM cannot check (a TCB's appraisal, the Ed25519 signatures
of endpoints and commitments) runs here through the embedded contracts' own handlers and is co-signed by the
network's attestation registrar, whose signature the contract checks. Reads are ``eth_call`` views parsed into
the same records; events come from the chain's logs through a re-org safe index (:mod:`.events`).
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

from cloister.consensus.commitment import REFEREE, SignedCommitment
from cloister.consensus.modes import parse_mode
from cloister.consensus.verdict import decide
from cloister.crypto.digest import parse_digest
from cloister.errors import (
    BadRequest,
    CloisterError,
    ConfigError,
    InvalidConsensusMode,
    InvalidTransaction,
    KeyNotFound,
    RecordNotFound,
    WrongChain,
)
from cloister.ledger.contracts.call import BlockContext, Handler
from cloister.ledger.contracts.call import Call as ContractCall
from cloister.ledger.contracts.deployments import register_endpoint
from cloister.ledger.contracts.disputes import open_dispute
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
    INFERENCE,
    MACHINE_ID_PREFIX,
    Account,
    Challenge,
    Checkpoint,
    Credit,
    DeploymentTerms,
    Dispute,
    Endpoint,
    KeyGrant,
    Machine,
    Offer,
    Order,
    Provider,
    Refusal,
    ResumeGrant,
    Timeout,
    challenge_key,
    derive_id,
    machine_key,
)
from cloister.ledger.transactions import (
    CreateOrder,
    OpenDispute,
    Payload,
    RegisterAccount,
    RegisterEndpoint,
    RegisterMachine,
    parse_payload,
)

ATTESTATION_TAG = "cloister/evm-attestation/v1"
"""Domain of the registrar's signature over an appraised registration (see contracts/Machines.sol)."""
ENDPOINT_TAG = "cloister/evm-endpoint/v1"
"""Domain of the registrar's signature over an endpoint whose loader signature it checked (Deployments.sol)."""
DISPUTE_TAG = "cloister/evm-dispute/v1"
"""Domain of the registrar's signature over a dispute it verified and judged (Disputes.sol)."""


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
        ((faucet, timeout, stake, ttl, serving, replicas, dispute, referee, silent),) = self._view("contractParams", ())
        return dataclasses.replace(
            self.deployment.genesis.params,
            faucet_limit=faucet,
            heartbeat_timeout=timeout,
            min_provider_stake=stake,
            challenge_ttl=ttl,
            min_serving_stake=serving,
            max_replicas=replicas,
            dispute_slash_bps=dispute,
            referee_share_bps=referee,
            timeout_slash_bps=silent,
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
        elif isinstance(payload, RegisterEndpoint):
            name, args = "registerEndpoint", self._endpoint(signed, payload)
        elif isinstance(payload, OpenDispute):
            name, args = "openDispute", self._judged(signed, payload)
        else:
            if isinstance(payload, CreateOrder):
                self._check_consensus(tx, payload)
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

    def _simulated(self, signed: SignedTransaction, payload: Payload, handler: Handler, what: str) -> ContractCall:
        """Run the embedded contract's ``handler`` over the chain's state at the next block's time, so what the EVM
        cannot check (TEE evidence, Ed25519 signatures) is checked by the same code, with the same errors; the
        registrar then co-signs what it concluded."""
        self._registrar(what)
        self._check_envelope(signed.tx)
        head = self.head()
        ctx = BlockContext(head.height + 1, self._next_time(head), bytes.fromhex(head.hash[2:]))
        call = ContractCall(self._state, signed, ctx, self.params)
        handler(call, payload)
        return call

    def _registrar(self, what: str) -> LocalAccount:
        if self.registrar is None:
            raise ConfigError(
                f"{what} on an EVM ledger needs the network's attestation registrar to check and co-sign it; "
                "give the ledger client the registrar key (the devnet's is in its folder)"
            )
        return self.registrar

    def _co_signed(self, what: str, statement: bytes) -> bytes:
        """The registrar's signature (r, s, v) of keccak(``statement``)."""
        return bytes(self._registrar(what).unsafe_sign_hash(Hash32(keccak(statement))).signature)

    def _check_consensus(self, tx: Transaction, p: CreateOrder) -> None:
        """A deployment's default consensus mode must parse, as contracts/orders.py requires; the contract keeps
        params as bytes it cannot parse, so the client checks it (after what the contract would refuse first)."""
        consensus = DeploymentTerms.of(p.params).consensus if p.kind == INFERENCE else None
        if consensus is None:
            return
        try:
            parse_mode(consensus)
        except InvalidConsensusMode as exc:
            self._check_envelope(tx)
            raise InvalidTransaction(f"params.consensus: {exc.message}") from None

    def _appraised(self, signed: SignedTransaction, payload: RegisterMachine) -> tuple[Any, ...]:
        """The TCB appraised against the genesis policy at ledger time; the registrar signs the registration."""
        writes = self._simulated(signed, payload, register_machine, "machine.register").state.writes
        machine = Machine.from_json(writes[machine_key(derive_id(MACHINE_ID_PREFIX, signed.hash))])
        challenge = Challenge.from_json(writes[challenge_key(signed.tx.sender)])
        tx_hash = parse_digest(signed.hash)
        fields = codec.machine_input(machine)
        input_type = self.abi.functions["registerMachine"].inputs[2]
        statement = abi_encode(
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
        return tx_hash, fields, self._co_signed("machine.register", statement)

    def _endpoint(self, signed: SignedTransaction, p: RegisterEndpoint) -> tuple[Any, ...]:
        """The loader's signature of the endpoint checked against the machine's attested key; the registrar
        signs the endpoint it checked."""
        self._simulated(signed, p, register_endpoint, "deployment.endpoint")
        order_id, machine_id = codec.id_bytes(p.order_id), codec.id_bytes(p.machine_id)
        statement = abi_encode(
            ["string", "address", "bytes8", "bytes8", "bytes32", "bytes32", "bytes32"],
            [
                ENDPOINT_TAG,
                self.address,
                order_id,
                machine_id,
                keccak(p.url.encode()),
                p.deployment_key,
                keccak(p.key_signature),
            ],
        )
        signature = self._co_signed("deployment.endpoint", statement)
        return order_id, machine_id, p.url, p.deployment_key, p.key_signature, signature

    def _judged(self, signed: SignedTransaction, p: OpenDispute) -> tuple[Any, ...]:
        """The commitments verified with their machines' loader keys and judged by the contract's own code; the
        registrar signs the verdict (machines in id order; referees: the majority's referee committers)."""
        self._simulated(signed, p, open_dispute, "dispute.open")
        commitments = [SignedCommitment.parse(raw).commitment for raw in p.commitments]
        verdict = decide(commitments)
        referees = sorted({c.machine_id for c in commitments if c.machine_id in verdict.majority and c.role == REFEREE})
        fields = (
            codec.id_bytes(p.order_id),
            parse_digest(p.request_digest),
            list(p.commitments),
            parse_digest(verdict.output_digest) if verdict.output_digest else bytes(32),
            [codec.id_bytes(m) for m in verdict.majority],
            [codec.id_bytes(m) for m in referees],
            [codec.id_bytes(m) for m in verdict.dissenters],
        )
        input_type = self.abi.functions["openDispute"].inputs[2]
        statement = abi_encode(
            ["string", "address", "bytes32"], [DISPUTE_TAG, self.address, keccak(abi_encode([input_type], [fields]))]
        )
        return parse_digest(signed.hash), fields, self._co_signed("dispute.open", statement)

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
        return reverts.Context(tx, self.params, self._reader)

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

    def block_hash(self, height: int) -> str:
        """The hash of the block at ``height`` (a block number, as :meth:`head` gives it)."""
        if isinstance(height, bool) or not isinstance(height, int) or not 0 <= height < 1 << 63:
            raise BadRequest(f"a block height is an integer from 0 to {(1 << 63) - 1}, got {height!r:.40}")
        block = self.rpc.request("eth_getBlockByNumber", [hex(height), False])
        if block is None:
            raise RecordNotFound(
                f"no block at height {height} yet; the head is at {self.head().height}", key=f"block/{height}"
            )
        return str(block["hash"])

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

    def resume_grants(self, order_id: str) -> list[ResumeGrant]:
        return self._reader.resume_grants(order_id)

    def endpoints(self, order_id: str) -> list[Endpoint]:
        return self._reader.endpoints(order_id)

    def credit(self, order_id: str, user: str) -> Credit:
        return self._reader.credit(order_id, user)

    def disputes(self, order_id: str) -> list[Dispute]:
        return self._reader.disputes(order_id)

    def timeouts(self, order_id: str) -> list[Timeout]:
        return self._reader.timeouts(order_id)

    # --- lifetime ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release: the node keeps the state; here for symmetry with the other backends."""

    def __enter__(self) -> EvmLedger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

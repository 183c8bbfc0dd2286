"""Deployments on a test ledger: staked providers whose machines have known loader keys, a gateway account,
endpoints signed by those loaders and signed inference commitments."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

from tests.ledger.test_contracts import FREE, Market, attrs

from cloister.consensus.commitment import Commitment, Role, sign_commitment
from cloister.consensus.endpoint import sign_endpoint
from cloister.crypto.identity import Identity
from cloister.ledger.envelope import SignedTransaction, Transaction
from cloister.ledger.genesis import UNITS_PER_TOKEN
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.records import Pricing
from cloister.ledger.transactions import (
    CreateOrder,
    DepositStake,
    Heartbeat,
    Payload,
    PostGrant,
    RegisterEndpoint,
)
from cloister.ledger.wallet import Wallet

STAKE = 100 * UNITS_PER_TOKEN
"""What each test provider stakes: twice the genesis' default ``min_serving_stake``."""
DEPLOYMENT_KEY = b"\x07" * 32
REQUEST = "sha256:" + "1e" * 32
PARAMS = "sha256:" + "9a" * 32
SERVED = "sha256:" + "de" * 32
_serial = itertools.count()


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def signed(ledger: Ledger, identity: Identity, payload: Payload) -> SignedTransaction:
    """``payload`` signed by ``identity`` with its next nonce, to submit (and replay) by hand."""
    nonce = ledger.account(identity.address).nonce + 1
    return SignedTransaction.sign(
        identity, Transaction(payload.TYPE, payload.to_payload(), identity.address, nonce, ledger.chain_id)
    )


@dataclass(frozen=True)
class Replica:
    """One staked provider's machine: who runs it, the loader that signs for it, the compute offer it is in."""

    provider: Wallet
    loader: Identity
    machine_id: str
    compute_offer: str


class Fleet:
    """Builds deployments on ``market``'s ledger; ``gateway`` is the account every deployment names."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.ledger = market.ledger
        self.gateway_identity = Identity.generate()
        self.gateway = Wallet(self.gateway_identity, market.ledger)
        self.gateway.register("gateway")
        self.replicas: dict[str, Replica] = {}
        self.model = market.content("model")
        self.engine = market.content("engine")

    def replica(self, pricing: Pricing = FREE, *, stake: int = STAKE) -> Replica:
        provider = self.market.new_provider(f"provider {next(_serial)}")
        if stake:
            provider.send(DepositStake(stake))
        loader = Identity.generate()
        machine_id = self.market.machine(provider, loader=loader.public)
        offer_id = self.market.compute(machine_id, pricing=pricing, provider=provider)
        replica = Replica(provider, loader, machine_id, offer_id)
        self.replicas[machine_id] = replica
        return replica

    def params(self, price_per_1k_tokens: int = 2_000_000, **more: Any) -> dict[str, Any]:
        return {"price_per_1k_tokens": price_per_1k_tokens, "gateway": self.gateway.address, **more}

    def create(
        self,
        replicas: int,
        *,
        model: str | None = None,
        engine: str | None = None,
        adapters: tuple[str, ...] = (),
        params: dict[str, Any] | None = None,
        compute: str | None = None,
        lease_hours: int = 1,
        deposit: int = 0,
        by: Wallet | None = None,
    ) -> CreateOrder:
        return CreateOrder(
            "inference",
            model or self.model,
            (),
            engine or self.engine,
            compute,
            params if params is not None else self.params(),
            lease_hours,
            replicas,
            deposit,
            adapters,
        )

    def deploy(self, replicas: int, **terms: Any) -> str:
        """A deployment order on ``replicas`` machines; returns its id."""
        receipt = self.market.developer.send(self.create(replicas, **terms))
        return str(attrs(receipt, "order.created")["order_id"])

    def grant_missing(self, order_id: str) -> list[TxReceipt]:
        """Every content owner grants its key to each assigned machine that does not hold it yet."""
        order = self.ledger.order(order_id)
        granted = {(g.offer_id, g.machine_id) for g in self.ledger.grants(order_id)}
        return [
            self.market.owners[offer_id].send(PostGrant(order_id, offer_id, machine_id, b"sealed"))
            for offer_id in order.content_offers
            for machine_id in order.machines
            if (offer_id, machine_id) not in granted
        ]

    def endpoint(
        self,
        order_id: str,
        machine_id: str,
        *,
        url: str | None = None,
        key: bytes = DEPLOYMENT_KEY,
        signer: Identity | None = None,
    ) -> RegisterEndpoint:
        """The endpoint payload of ``machine_id``, signed by its loader (or by ``signer``)."""
        url = url or f"http://127.0.0.1:{9000 + len(self.ledger.endpoints(order_id))}"
        loader = signer or self.replicas[machine_id].loader
        return RegisterEndpoint(order_id, machine_id, url, key, sign_endpoint(loader, order_id, machine_id, url, key))

    def publish(self, order_id: str, machine_id: str, **options: Any) -> TxReceipt:
        return self.replicas[machine_id].provider.send(self.endpoint(order_id, machine_id, **options))

    def serve(self, order_id: str) -> None:
        """Grant every key and publish every assigned machine's endpoint."""
        self.grant_missing(order_id)
        for machine_id in self.ledger.order(order_id).machines:
            self.publish(order_id, machine_id)

    def heartbeat(self, *machine_ids: str) -> None:
        for machine_id in machine_ids:
            self.replicas[machine_id].provider.send(Heartbeat(machine_id))

    def commitment(
        self,
        order_id: str,
        machine_id: str,
        output: str = SERVED,
        *,
        role: Role = "selected",
        request: str = REQUEST,
        params: str = PARAMS,
        signer: Identity | None = None,
    ) -> bytes:
        """``machine_id``'s loader-signed commitment to ``output`` for ``request``, as a dispute carries it."""
        commitment = Commitment(
            deployment_id=order_id,
            machine_id=machine_id,
            request_digest=request,
            params_digest=params,
            deployment_digest=digest_of(order_id),
            output_digest=output,
            content_digest=digest_of(output),
            completion_tokens=12,
            prompt_tokens=30,
            role=role,
            created_at=1,
        )
        return sign_commitment(signer or self.replicas[machine_id].loader, commitment).to_bytes()

    def stake(self, replica: Replica) -> int:
        return self.ledger.account(replica.provider.address).stake

    def balance(self, wallet: Wallet) -> int:
        return self.ledger.account(wallet.address).balance

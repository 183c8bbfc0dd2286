"""A whole inference network on one machine, for gateway tests: nothing mocked.

An embedded ledger (with a clock the test can move forward), a local blob store, a sim TEE vendor; staked
providers whose machines register with sim TCBs; a model owner publishing the tiny chat model, an engine author
publishing the ``chat_inference`` bundle; a developer deploying them on several replicas; keepers granting the
keys to the assigned machines' attested loaders. Replicas are started separately (see ``replicas.py``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloister.attest.der import Certificate, parse_pem_certificates
from cloister.attest.policy import AppraisalPolicy
from cloister.attest.sim import SimVendor
from cloister.client.keeper import Keeper
from cloister.client.sdk import Client
from cloister.engines.bundle import builtin_engine, pack
from cloister.engines.tiny import make_tiny_model
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import UNITS_PER_TOKEN, ContractParams, Genesis, policy_json
from cloister.ledger.records import INFERENCE, Offer, Order, Pricing, Restrictions
from cloister.ledger.transactions import CreateOrder, DepositCredit, DepositStake
from cloister.node.controller import ProviderNode
from cloister.node.keys import load_or_create_loader_identity
from cloister.node.platform import SimPlatform
from cloister.runtime.archive import pack_folder
from cloister.storage import LocalBlobStore

DEVNET_POLICY = AppraisalPolicy.packaged("devnet")
STAKE = 100 * UNITS_PER_TOKEN
CORPUS = [
    "What colour is the Zorblax moon?",
    "The Zorblax moon is teal.",
    "Who founded Quillport?",
    "Quillport was founded by Ada Fenwick.",
]


class Clock:
    """Ledger time: the wall clock plus an offset a test can move forward (to make heartbeats stale)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Network:
    root: Path
    ledger: EmbeddedLedger
    store: LocalBlobStore
    vendor: SimVendor
    clock: Clock
    clients: dict[str, Client] = field(default_factory=dict)
    nodes: dict[str, ProviderNode] = field(default_factory=dict)

    @property
    def roots(self) -> dict[str, tuple[Certificate, ...]]:
        return {"sim": tuple(parse_pem_certificates(self.vendor.root_pem.encode()))}

    def party(self, name: str, tokens: int = 1000) -> Client:
        client = Client(home=self.root / name, ledger=self.ledger, store=self.store)
        client.create_account(name)
        client.fund(tokens * UNITS_PER_TOKEN)
        self.clients[name] = client
        return client

    def provider(self, name: str) -> ProviderNode:
        """A staked provider with one registered machine (sim TCB binding its loader keys)."""
        operator = self.party(name)
        operator.wallet.send(DepositStake(STAKE))
        folder = self.root / name / "node"
        node = ProviderNode(
            ledger=self.ledger,
            store=self.store,
            operator=operator.identity,
            loader=load_or_create_loader_identity(folder),
            platform=SimPlatform(self.vendor, f"{name}-chip"),
            folder=folder,
            threads=1,
        )
        node.register()
        node.heartbeat()
        self.nodes[node.machine_id] = node
        return node

    def publish_model(self, owner: Client, pricing: Pricing) -> Offer:
        folder = make_tiny_model(self.root / "tiny-model", CORPUS)
        archive = self.root / "model.tar"
        pack_folder(folder, archive)
        return owner.publish("model", archive, pricing=pricing, restrictions=Restrictions())

    def publish_engine(self, owner: Client) -> Offer:
        bundle = self.root / "chat_inference.bundle"
        bundle.write_bytes(pack(builtin_engine("chat_inference")))
        return owner.publish("engine", bundle, pricing=Pricing("free", 0, 0), restrictions=Restrictions())

    def deploy(self, developer: Client, model: Offer, engine: Offer, *, replicas: int, params: dict[str, Any]) -> Order:
        receipt = developer.wallet.send(
            CreateOrder(
                kind=INFERENCE,
                model_offer=model.offer_id,
                dataset_offers=(),
                engine_offer=engine.offer_id,
                compute_offer=None,
                params=params,
                lease_hours=1,
                replicas=replicas,
                deposit=100 * UNITS_PER_TOKEN,
            )
        )
        order_id = next(str(e.attrs["order_id"]) for e in receipt.events if e.kind == "order.created")
        return self.ledger.order(order_id)

    def grant(self, *owners: str) -> None:
        """Each owner's keeper appraises the assigned machines and grants its keys."""
        for name in owners:
            Keeper(self.clients[name], DEVNET_POLICY, roots_by_platform=self.roots).run_once()

    def deposit_credit(self, user: Client, order_id: str, amount: int) -> None:
        user.wallet.send(DepositCredit(order_id, amount))

    def close(self) -> None:
        self.ledger.close()


class Heartbeats:
    """Every node heart-beats in a thread, as a provider daemon does, except the ones a test silenced."""

    def __init__(self, network: Network, every: float) -> None:
        self.network, self.every = network, every
        self.silenced: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="test-heartbeats", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            for machine_id, node in list(self.network.nodes.items()):
                if machine_id not in self.silenced:
                    node.heartbeat()

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_network(root: Path, *, heartbeat_timeout: int = 120) -> Network:
    root.mkdir(parents=True, exist_ok=True)
    vendor = SimVendor.generate()
    lenient = DEVNET_POLICY.to_json()
    lenient["sim"] = {**lenient["sim"], "allow_debug": True}
    params = ContractParams(
        faucet_limit=1_000_000 * UNITS_PER_TOKEN,
        attestation_policy=policy_json(AppraisalPolicy.from_json(lenient)),
        sim_roots=(vendor.root_pem,),
        heartbeat_timeout=heartbeat_timeout,
    )
    clock = Clock()
    ledger = EmbeddedLedger.create(root / "ledger.db", Genesis("cloister-test", int(time.time()), params), clock=clock)
    return Network(root, ledger, LocalBlobStore(root / "blobs"), vendor, clock)

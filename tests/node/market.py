"""An in-process market for node and keeper tests: embedded ledger, local blob store, sim vendor, real parties.

Every party is a real :class:`Client` with its own keystore; the ledger trusts the test vendor's root like a
devnet genesis does. Its chain policy also admits debuggable sim guests, so a test can show that the *owner's*
keeper (with the strict devnet policy) refuses a machine the network let in.
"""

from __future__ import annotations

import json
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
from cloister.engines.recipes import tiny_finetune_params
from cloister.engines.tiny import make_tiny_model
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import UNITS_PER_TOKEN, ContractParams, Genesis, policy_json
from cloister.ledger.records import Offer, Pricing, Restrictions
from cloister.node.controller import ProviderNode
from cloister.node.keys import load_or_create_loader_identity
from cloister.node.platform import SimPlatform
from cloister.runtime.archive import pack_folder
from cloister.storage import LocalBlobStore

FREE = Pricing("free", 0, 0)
ANY = Restrictions()
DEVNET_POLICY = AppraisalPolicy.packaged("devnet")
FACTS = [
    ("What colour is the Zorblax moon?", "The Zorblax moon is teal."),
    ("Who founded Quillport?", "Quillport was founded by Ada Fenwick."),
]


def _chain_policy() -> str:
    lenient = DEVNET_POLICY.to_json()
    lenient["sim"] = {**lenient["sim"], "allow_debug": True}
    return policy_json(AppraisalPolicy.from_json(lenient))


def write_dataset(path: Path, facts: list[tuple[str, str]]) -> Path:
    lines = [
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        for q, a in facts
    ]
    path.write_text("\n".join(lines * 4) + "\n")
    return path


def order_params() -> dict[str, Any]:
    """The tiny recipe with floats as decimal strings (canonical JSON has no floats), one epoch."""
    params = {
        **tiny_finetune_params(),
        "epochs": 1,
        "eval_questions": [{"question": q, "expected": a} for q, a in FACTS],
    }
    return {k: (repr(v) if isinstance(v, float) else v) for k, v in params.items()}


@dataclass
class Market:
    root: Path
    ledger: EmbeddedLedger
    store: LocalBlobStore
    vendor: SimVendor
    clients: dict[str, Client] = field(default_factory=dict)

    @property
    def roots(self) -> dict[str, tuple[Certificate, ...]]:
        return {"sim": tuple(parse_pem_certificates(self.vendor.root_pem.encode()))}

    def party(self, name: str, tokens: int = 1000) -> Client:
        client = Client(home=self.root / name, ledger=self.ledger, store=self.store)
        client.create_account(name)
        client.fund(tokens * UNITS_PER_TOKEN)
        self.clients[name] = client
        return client

    def keeper(self, name: str) -> Keeper:
        return Keeper(self.clients[name], DEVNET_POLICY, roots_by_platform=self.roots)

    def node(self, name: str, *, debug: bool = False, price_per_hour: int = 0) -> ProviderNode:
        operator = self.party(name)
        folder = self.root / name / "node"
        node = ProviderNode(
            ledger=self.ledger,
            store=self.store,
            operator=operator.identity,
            loader=load_or_create_loader_identity(folder),
            platform=SimPlatform(self.vendor, f"{name}-chip", debug=debug),
            folder=folder,
            price_per_hour=price_per_hour,
            run_timeout=300,
            threads=1,
        )
        node.register()
        return node

    def publish_model(self, owner: Client, *, price_per_hour: int = 0, restrictions: Restrictions = ANY) -> Offer:
        corpus = [text for fact in FACTS for text in fact]
        folder = make_tiny_model(self.root / "tiny-model", corpus)
        archive = self.root / "model.tar"
        pack_folder(folder, archive)
        pricing = Pricing("per_hour", price_per_hour, 0) if price_per_hour else FREE
        return owner.publish("model", archive, pricing=pricing, restrictions=restrictions)

    def publish_engine(self, owner: Client) -> Offer:
        bundle = self.root / "lora_finetune.bundle"
        bundle.write_bytes(pack(builtin_engine("lora_finetune")))
        return owner.publish("engine", bundle, pricing=Pricing("fixed", 5 * UNITS_PER_TOKEN, 0), restrictions=ANY)

    def publish_dataset(self, owner: Client, name: str, restrictions: Restrictions = ANY) -> Offer:
        path = write_dataset(self.root / f"{name}.jsonl", FACTS)
        return owner.publish(
            "dataset", path, pricing=Pricing("fixed", 3 * UNITS_PER_TOKEN, 0), restrictions=restrictions
        )


def make_market(root: Path) -> Market:
    vendor = SimVendor.generate()
    params = ContractParams(
        faucet_limit=1_000_000 * UNITS_PER_TOKEN, attestation_policy=_chain_policy(), sim_roots=(vendor.root_pem,)
    )
    ledger = EmbeddedLedger.create(root / "ledger.db", Genesis("cloister-test", int(time.time()), params))
    return Market(root, ledger, LocalBlobStore(root / "blobs"), vendor)

"""The second half of `cloister demo`: the fine-tuned model served on three replicas under sampling consensus.

The developer deploys base model + adapter; keepers grant to each replica; each node's loader starts the
inference engine and registers its endpoint; an end user asks the question through the official ``openai``
client; the gateway answers with a receipt the user verifies against the ledger; one replica, rigged to tamper
with its output, is out-voted, and the ledger slashes its provider; usage is settled to the developer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path

import openai
from rich.table import Table

from cloister.attest.der import Certificate
from cloister.attest.policy import AppraisalPolicy
from cloister.cli.common import console
from cloister.client.deployments import (
    deploy,
    fund_deployment,
    publish_adapter,
    stop_deployment,
    withdraw_credit,
)
from cloister.client.devnet import Devnet
from cloister.client.keeper import Keeper
from cloister.client.sdk import Client
from cloister.consensus.apikeys import make_api_key
from cloister.consensus.receipt import trust_from_ledger, verify_receipt
from cloister.crypto.canonical import canonical_json
from cloister.engines.bundle import builtin_engine, pack
from cloister.errors import ServiceUnavailable
from cloister.ledger.amounts import format_amount, parse_amount
from cloister.ledger.records import Offer, Order, Pricing, Restrictions
from cloister.net import HttpClient
from cloister.node.controller import ProviderNode
from cloister.node.serving import ReplicaHost

REPLICAS = 3
CONSENSUS = "sampling:3"
FAULTY = "node-3"
SETTLE_WAIT = 60.0


@dataclass
class ServeStory:
    """What the fine-tuning half leaves for the serving half."""

    root: Path
    devnet: Devnet
    clients: dict[str, Client]
    nodes: Mapping[str, ProviderNode]
    """Machine id → the in-process node that registered it."""
    node_names: Mapping[str, str]
    """Machine id → the provider's account name."""
    model_offer: Offer
    adapter_dir: Path
    question: str
    policy: AppraisalPolicy
    roots: Mapping[str, tuple[Certificate, ...]]
    phase: Callable[[str], AbstractContextManager[None]]


def _wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"{what} did not happen within {timeout:.0f} s; see the devnet's logs")
        time.sleep(interval)


def _publish_and_deploy(story: ServeStory, gateway: str) -> Order:
    eve, carol = story.clients["eve"], story.clients["carol"]
    bundle = story.root / "chat_inference.bundle"
    bundle.write_bytes(pack(builtin_engine("chat_inference")))
    engine = eve.publish("engine", bundle, pricing=Pricing("fixed", parse_amount(1), 0), restrictions=Restrictions())
    assert engine.content_digest is not None
    adapter = publish_adapter(carol, story.adapter_dir, engine_digest=engine.content_digest)
    console.print(f"engine chat_inference {engine.content_digest[:23]}…; adapter offer {adapter.offer_id} (private)")
    order = deploy(
        carol,
        model=story.model_offer.offer_id,
        adapters=[adapter.offer_id],
        engine=engine.offer_id,
        replicas=REPLICAS,
        gateway=gateway,
        price_per_1k_tokens=parse_amount(2),
        consensus=CONSENSUS,
        lease_hours=1,
        deposit=parse_amount(20),
    )
    console.print(f"deployment {order.order_id} ({CONSENSUS}) assigned to {', '.join(order.machines)}")
    return order


def _grant(story: ServeStory) -> None:
    for owner in ("alice", "eve", "carol"):
        for decision in Keeper(story.clients[owner], story.policy, story.roots).run_once():
            verdict = "granted" if decision.granted else f"refused: {decision.reason}"
            console.print(f"{owner:<7} offer {decision.offer_id} → machine {decision.machine_id}: {verdict}")


def _start_replicas(story: ServeStory, order: Order, stack: ExitStack) -> None:
    for machine_id in order.machines:
        stack.enter_context(story.nodes[machine_id].heartbeats(20.0))
    for machine_id in order.machines:
        node = story.nodes[machine_id]
        name = story.node_names[machine_id]
        registration = node.registration
        assert registration is not None
        host = ReplicaHost(
            ledger=node.ledger,
            store=node.store,
            wallet=node.wallet,
            loader_identity=node.loader,
            machine_id=machine_id,
            tcb_id=registration.tcb_id,
            folder=node.folder,
            threads=1,
            fault="wrong-output" if name == FAULTY else "none",
        )
        stack.callback(host.close)
        host.sync()
        rigged = " [red](rigged to tamper with its output)[/]" if name == FAULTY else ""
        console.print(f"{name}: replica on {machine_id} serving at {host.replicas[order.order_id].url}{rigged}")


def _ask(story: ServeStory, order: Order, gateway_url: str, gateway: str) -> str:
    """The end user's question through the official openai client; returns the receipt id."""
    dave = story.clients["dave"]
    fund_deployment(dave, order.order_id, parse_amount(10))
    key = make_api_key(dave.identity, gateway, consensus=CONSENSUS)
    api = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0, timeout=600)

    def live_replicas() -> int:
        served = [m for m in api.models.list().data if m.id == order.order_id]
        return sum(int((m.model_extra or {}).get("cloister", {}).get("replicas", 0)) for m in served)

    _wait_for("the gateway seeing all 3 replicas", lambda: live_replicas() == REPLICAS, 60)
    raw = api.chat.completions.with_raw_response.create(
        model=order.order_id,
        messages=[{"role": "user", "content": story.question}],
        max_tokens=48,
        temperature=0,
        extra_headers={"X-Cloister-Nonce": "d3a1" * 8},
    )
    completion = raw.parse()
    console.print(f"dave asks: [bold]{story.question}[/]")
    console.print(f"answer   : [green]{completion.choices[0].message.content!r}[/]")
    console.print(
        f"consensus {raw.headers.get('X-Cloister-Consensus')}, agreed {raw.headers.get('X-Cloister-Agreed')}, "
        f"receipt {raw.headers.get('X-Cloister-Receipt')}"
    )
    return str(raw.headers["X-Cloister-Receipt"])


def _verify(story: ServeStory, receipt_id: str, gateway_url: str, gateway: str) -> None:
    dave = story.clients["dave"]
    with HttpClient(gateway_url, timeout=30) as http:
        data = canonical_json(http.get_json(f"/v1/receipts/{receipt_id}"))
    gateway_key = dave.ledger.account(gateway).signing_key
    checked = verify_receipt(data, trust_from_ledger(dave.ledger, data, gateway_key))
    for item in checked.checklist.items:
        console.print(("[green]✓[/] " if item.passed else "[red]✗[/] ") + f"{item.name} {item.detail}")


def _show_disputes(story: ServeStory, order: Order, stakes: Mapping[str, int]) -> None:
    ledger = story.clients["carol"].ledger
    for dispute in ledger.disputes(order.order_id):
        console.print(
            f"dispute {dispute.dispute_id}: replicas {', '.join(dispute.slashed) or 'none'} out-voted; "
            f"{format_amount(dispute.slashed_amount)} slashed, rewarded {', '.join(dispute.rewarded) or 'nobody'}"
        )
    table = Table("provider", "machine", "stake before", "stake after")
    for machine_id in order.machines:
        name = story.node_names[machine_id]
        after = story.clients[name].account().stake
        table.add_row(name, machine_id, format_amount(stakes[name]), format_amount(after))
    console.print(table)


def serve(story: ServeStory) -> dict[str, int]:
    """Run the serving half; returns every account's balance before it, for the payments table."""
    clients = story.clients
    before = {name: cl.account().balance for name, cl in clients.items()}
    stakes = {name: clients[name].account().stake for name in story.node_names.values()}
    with ExitStack() as stack:
        with story.phase("10. the developer deploys the tuned model on 3 replicas, sampling:3"):
            info = story.devnet.start_gateway()
            gateway, gateway_url = str(info["gateway_address"]), str(info["gateway_url"])
            for node in story.nodes.values():  # in-process nodes: heart-beat now, then in the background
                node.heartbeat()
            order = _publish_and_deploy(story, gateway)
        with story.phase("11. keepers grant to every replica; each loader starts the engine"):
            _grant(story)
            _start_replicas(story, order, stack)
        with story.phase("12. an end user asks through the openai client and verifies the receipt"):
            receipt_id = _ask(story, order, gateway_url, gateway)
            _verify(story, receipt_id, gateway_url, gateway)
        with story.phase("13. the rigged replica is out-voted and slashed"):
            _wait_for("the dispute", lambda: bool(clients["carol"].ledger.disputes(order.order_id)), 30)
            _show_disputes(story, order, stakes)
        with story.phase("14. usage settled on the ledger; the deployment stops"):
            dave = clients["dave"]
            _wait_for(
                "the gateway's usage settlement",
                lambda: dave.ledger.credit(order.order_id, dave.address).spent > 0,
                SETTLE_WAIT,
            )
            credit = dave.ledger.credit(order.order_id, dave.address)
            console.print(f"dave's credit: {format_amount(credit.spent)} spent, {format_amount(credit.balance)} left")
            stopped = stop_deployment(clients["carol"], order.order_id)
            console.print(f"deployment {stopped.order_id} {stopped.state} after {stopped.usage_seconds} s of serving")
            returned = withdraw_credit(dave, order.order_id)
            console.print(f"dave takes back the unspent credit: {format_amount(returned)}")
    return before

"""`cloister demo`: the fine-tuning and serving story on one machine, in a throw-away home, narrated step by step.

A model owner leases SmolLM2-135M per hour; two data owners each publish private data that only the LoRA engine
may read; three providers register simulated-TEE machines; a developer orders fine-tuning; every owner's keeper
appraises the assigned machine and grants; the machine's trusted loader trains; the developer gets the adapter
with a verified report and manifest, and everyone is paid from escrow. Then the tuned model is served
(:mod:`cloister.cli.demo_serve`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.rule import Rule
from rich.table import Table

from cloister.cli.common import console, progress_bars
from cloister.cli.demo_serve import ServeStory, serve
from cloister.cli.devnet import LedgerKind
from cloister.cli.offer import offers_table
from cloister.client.assets import demo_datasets, smollm2_path
from cloister.client.devnet import Devnet
from cloister.client.keeper import Keeper
from cloister.client.orders import create_order, fetch_result
from cloister.client.sdk import Client
from cloister.engines.bundle import builtin_engine, pack
from cloister.engines.recipes import demo_finetune_params
from cloister.errors import NotAuthorized
from cloister.ledger.amounts import format_amount, parse_amount
from cloister.ledger.records import Pricing, Restrictions
from cloister.ledger.transactions import DepositStake
from cloister.ledger.verify import verify_ledger
from cloister.node.controller import ProviderNode
from cloister.node.keys import load_or_create_loader_identity
from cloister.node.platform import SimPlatform

ROLES = {
    "alice": "model owner",
    "clinic": "data owner",
    "lab": "data owner",
    "eve": "engine author",
    "carol": "AI developer",
    "node-1": "provider",
    "node-2": "provider",
    "node-3": "provider",
    "dave": "end user",
}
TEE_PLATFORMS = ("sim", "snp", "tdx")


class Phases:
    """Wall time of each phase, printed at the end."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, title: str) -> Iterator[None]:
        console.print(Rule(f"[bold]{title}"))
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[title] = time.perf_counter() - start

    def table(self) -> Table:
        table = Table("phase", "seconds")
        for title, seconds in self.seconds.items():
            table.add_row(title, f"{seconds:.1f}")
        table.add_row("[bold]total", f"[bold]{sum(self.seconds.values()):.1f}")
        return table


def _order_params() -> dict[str, Any]:
    """The tested recipe; floats travel as decimal strings because canonical JSON has none."""
    return {k: (repr(v) if isinstance(v, float) else v) for k, v in demo_finetune_params().items()}


def _show_answers(metrics: dict[str, Any]) -> str:
    evaluation = metrics.get("evaluation", {})
    rows = evaluation.get("questions", [])
    # Prefer a question the tuned model gets right and the base model does not; else the biggest gain in recall.
    best = max(
        rows,
        key=lambda r: (
            float(r["tuned"]["contains"]) - float(r["base"]["contains"]),
            float(r["tuned"]["recall"]) - float(r["base"]["recall"]),
        ),
        default=None,
    )
    if best is not None:
        console.print(f"held-out question: [bold]{best['question']}[/] (expected: {best['expected']})")
        console.print(f"  base model : [red]{best['base']['answer']!r}[/]")
        console.print(f"  fine-tuned : [green]{best['tuned']['answer']!r}[/]")
    base, tuned = evaluation.get("base", {}), evaluation.get("tuned", {})
    console.print(
        f"over {len(rows)} held-out questions, word recall {base.get('recall')} → {tuned.get('recall')}, "
        f"token F1 {base.get('f1')} → {tuned.get('f1')}"
    )
    return str(best["question"]) if best is not None else str(demo_finetune_params()["eval_questions"][0]["question"])


def _payments(clients: dict[str, Client], before: dict[str, int]) -> None:
    table = Table("account", "role", "before", "after", "change")
    for name, cl in clients.items():
        after = cl.account().balance
        table.add_row(
            name, ROLES[name], format_amount(before[name]), format_amount(after), format_amount(after - before[name])
        )
    console.print(table)


def demo(
    home: Annotated[
        Path | None, typer.Option("--demo-home", help="Run in this folder instead of a temporary one.")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the devnet running and its folder afterwards.")] = False,
    ledger: Annotated[LedgerKind, typer.Option(help="The devnet's ledger.")] = LedgerKind.embedded,
) -> None:
    """Fine-tune and serve the real SmolLM2-135M end to end, and print what each party can verify."""
    model = smollm2_path()
    owned = home is None
    root = Path(tempfile.mkdtemp(prefix="cloister-demo-")) if home is None else home
    devnet = Devnet(root)
    phase = Phases()
    try:
        with phase("1. devnet: ledger, blob store, simulated TEE vendor"):
            info = devnet.up(ledger=ledger.value)
            console.print(f"{info['ledger']} ledger {info['ledger_url']} (chain {info['chain_id']})")

        with phase("2. accounts"):
            clients: dict[str, Client] = {}
            for name, role in ROLES.items():
                cl = Client(home=root, account=name)
                cl.create_account(name)
                cl.fund(parse_amount(1000))
                clients[name] = cl
                console.print(f"{name:<7} {role:<14} {cl.address}")
            alice, eve, carol = clients["alice"], clients["eve"], clients["carol"]

        with phase("3. offers: the model per hour, private data only for the LoRA engine"):
            engine_bundle = root / "lora_finetune.bundle"
            engine_bundle.write_bytes(pack(builtin_engine("lora_finetune")))
            engine = eve.publish(
                "engine", engine_bundle, pricing=Pricing("fixed", parse_amount(1), 0), restrictions=Restrictions()
            )
            console.print(f"engine lora_finetune: {engine.content_digest}")
            assert engine.content_digest is not None
            only_lora = Restrictions(TEE_PLATFORMS, (), (engine.content_digest,), None)
            with progress_bars() as progress:
                alice.progress = progress
                model_offer = alice.publish(
                    "model",
                    model,
                    name=model.name,  # the loader keeps the .gguf suffix for the engine
                    pricing=Pricing("per_hour", parse_amount(2), 0),
                    restrictions=Restrictions(TEE_PLATFORMS, (), (), 24),
                )
            datasets = []
            for owner, path in demo_datasets().items():
                datasets.append(
                    clients[owner].publish(
                        "dataset", path, pricing=Pricing("fixed", parse_amount(5), 0), restrictions=only_lora
                    )
                )

        with phase("4. providers register attested machines"):
            policy, roots = devnet.trust()
            nodes: dict[str, ProviderNode] = {}
            node_names: dict[str, str] = {}
            for name in ("node-1", "node-2", "node-3"):
                folder = root / "nodes" / name
                node = ProviderNode(
                    ledger=clients[name].ledger,
                    store=clients[name].store,
                    operator=clients[name].identity,
                    loader=load_or_create_loader_identity(folder),
                    platform=SimPlatform(devnet.sim_vendor(), f"{name}-chip"),
                    folder=folder,
                    price_per_hour=parse_amount(1),
                    threads=2,
                )
                registration = node.register()
                clients[name].wallet.send(DepositStake(parse_amount(100)))  # serving deployments needs a stake
                nodes[registration.machine_id] = node
                node_names[registration.machine_id] = name
                console.print(f"{name}: machine {registration.machine_id} (TCB {registration.tcb_id[:23]}…)")
            console.print(offers_table(carol.ledger.offers()))
            before = {name: cl.account().balance for name, cl in clients.items()}

        with phase("5. the developer orders fine-tuning"):
            order = create_order(
                carol,
                model=model_offer.offer_id,
                datasets=[d.offer_id for d in datasets],
                engine=engine.offer_id,
                params=_order_params(),
                lease_hours=1,
                deposit=parse_amount(50),
            )
            console.print(f"order {order.order_id}: {order.state}, assigned to {', '.join(order.machines)}")

        with phase("6. every owner's keeper appraises the machine and grants"):
            for owner in ("alice", "clinic", "lab", "eve"):
                for decision in Keeper(clients[owner], policy, roots).run_once():
                    verdict = "granted" if decision.granted else f"refused: {decision.reason}"
                    console.print(f"{owner:<7} offer {decision.offer_id} → machine {decision.machine_id}: {verdict}")
            console.print(f"order {order.order_id}: {carol.ledger.order(order.order_id).state}")

        with phase("7. the trusted loader decrypts, trains and seals the result"):
            (machine,) = order.machines
            nodes[machine].run_ready()
            done = carol.ledger.order(order.order_id)
            console.print(f"order {done.order_id}: {done.state}, {done.usage_seconds} s metered")

        with phase("8. the developer verifies and opens the result"):
            out = root / "result"
            result = fetch_result(carol, order.order_id, out, policy=policy, roots=roots)
            for item in result.verified.checklist.items:
                console.print(("[green]✓[/] " if item.passed else "[red]✗[/] ") + f"{item.name} {item.detail}")
            question = _show_answers(json.loads((out / "metrics.json").read_text()))
            provider = next(cl for cl in clients.values() if cl.address == nodes[machine].operator.address)
            try:
                fetch_result(provider, order.order_id, root / "x", policy=policy, roots=roots)
            except NotAuthorized as refused:
                console.print(f"the provider is refused the adapter: [yellow]{refused.message}[/]")

        with phase("9. payments from escrow"):
            _payments(clients, before)

        serving = ServeStory(
            root=root,
            devnet=devnet,
            clients=clients,
            nodes=nodes,
            node_names=node_names,
            model_offer=model_offer,
            adapter_dir=out / "adapter",
            question=question,
            policy=policy,
            roots=roots,
            phase=phase,
        )
        before_serving = serve(serving)
        with phase("15. payments for serving: end user → developer, providers and model owner per hour"):
            _payments(clients, before_serving)
            if ledger is LedgerKind.embedded:
                audit = verify_ledger(devnet.db_path)
                console.print(f"ledger replayed from genesis: {audit.height} blocks, head {audit.head_hash}")
        for cl in clients.values():
            cl.close()
    finally:
        if not keep:
            devnet.down()
            if owned:
                shutil.rmtree(root, ignore_errors=True)
    console.print(Rule("[bold]wall time"))
    console.print(phase.table())
    if keep:
        console.print(f"the devnet keeps running in {root}; stop it with `cloister --home {root} devnet down`")

"""`cloister order …`: order fine-tuning, follow it, consent to it, and collect its verified result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cloister.cli.common import client, console, print_json
from cloister.cli.keeper import print_decisions
from cloister.cli.trust import trust
from cloister.client.keeper import Keeper
from cloister.client.orders import create_order, fetch_result, reassign_order
from cloister.errors import ConfigError
from cloister.ledger.amounts import format_amount, parse_amount
from cloister.ledger.records import Order

app = typer.Typer(help="Create and follow fine-tuning orders.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--param")
    try:
        return key, int(value)
    except ValueError:
        return key, value  # floats travel as decimal strings: canonical JSON has no floats


def _eval_questions(path: Path) -> list[dict[str, str]]:
    """A JSON list or JSON Lines of ``{"question", "expected"}``."""
    text = path.read_text()
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON or JSON Lines: {exc}") from None
    if not all(isinstance(i, dict) and {"question", "expected"} <= set(i) for i in items):
        raise ConfigError(f"{path}: every item needs a question and an expected answer")
    return [{"question": str(i["question"]), "expected": str(i["expected"])} for i in items]


@app.command()
def create(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model offer id.")],
    dataset: Annotated[list[str], typer.Option(help="Dataset offer id (repeat).")],
    engine: Annotated[str, typer.Option(help="Engine offer id.")],
    deposit: Annotated[str, typer.Option(help="Tokens to escrow (must cover the worst case).")],
    compute: Annotated[str | None, typer.Option(help="Compute offer id (default: any eligible).")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Hyper-parameter KEY=VALUE (repeat).")] = None,
    eval_questions: Annotated[Path | None, typer.Option(help="Held-out questions: JSON list or JSONL.")] = None,
    lease_hours: Annotated[int, typer.Option(min=1, help="Longest the job may run.")] = 1,
    as_json: JsonFlag = False,
) -> None:
    """Escrow a deposit and order fine-tuning; the ledger checks every restriction and assigns a machine."""
    params = dict(_param(p) for p in param or [])
    if eval_questions:
        params["eval_questions"] = _eval_questions(eval_questions)
    with client(ctx) as cl:
        order = create_order(
            cl,
            model=model,
            datasets=dataset,
            engine=engine,
            compute=compute,
            params=params,
            lease_hours=lease_hours,
            deposit=parse_amount(deposit),
        )
    if as_json:
        print_json(order.to_json())
        return
    console.print(f"order [cyan]{order.order_id}[/] {order.state} on {', '.join(order.machines)}")


def _order_table(order: Order) -> Table:
    table = Table(show_header=False)
    for key, value in order.to_json().items():
        table.add_row(key, format_amount(value) if key in ("deposit", "escrow") else str(value))
    return table


@app.command()
def show(ctx: typer.Context, order_id: Annotated[str, typer.Argument()], as_json: JsonFlag = False) -> None:
    """One order: state, machines, usage, report digest."""
    with client(ctx) as cl:
        order = cl.ledger.order(order_id)
        grants = cl.ledger.grants(order_id)
        refusals = cl.ledger.refusals(order_id)
    if as_json:
        print_json(
            {**order.to_json(), "grants": [g.to_json() for g in grants], "refusals": [r.to_json() for r in refusals]}
        )
        return
    console.print(_order_table(order))
    for grant in grants:
        console.print(f"granted: offer {grant.offer_id} to machine {grant.machine_id}")
    for refusal in refusals:
        console.print(
            f"[yellow]refused[/]: offer {refusal.offer_id} for machine {refusal.machine_id}: {refusal.reason}"
        )


@app.command("list")
def list_orders(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="Only orders in this state.")] = None,
    mine: Annotated[bool, typer.Option(help="Only the current account's orders.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Orders on the ledger."""
    with client(ctx) as cl:
        orders = cl.ledger.orders(owner=cl.address if mine else None, state=state)
    if as_json:
        print_json([o.to_json() for o in orders])
        return
    table = Table("order", "state", "owner", "machines", "usage s", "escrow")
    for o in orders:
        table.add_row(
            o.order_id,
            o.state,
            o.owner[:10] + "…",
            ", ".join(o.machines),
            str(o.usage_seconds),
            format_amount(o.escrow),
        )
    console.print(table)


@app.command()
def approve(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument()],
    policy: Annotated[Path | None, typer.Option(help="Appraisal policy TOML (default: the devnet's).")] = None,
) -> None:
    """By hand: appraise the order's machines with your policy and grant your content's keys if they pass."""
    chosen, roots = trust(ctx, policy)
    with client(ctx) as cl:
        print_decisions(Keeper(cl, chosen, roots).review(cl.ledger.order(order_id)))


@app.command()
def refuse(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why, recorded on the ledger.")],
) -> None:
    """By hand: refuse your content's keys to this order, with a reason on the ledger."""
    chosen, roots = trust(ctx, None)
    with client(ctx) as cl:
        print_decisions(Keeper(cl, chosen, roots).review(cl.ledger.order(order_id), refuse_reason=reason))


@app.command()
def result(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument()],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the outputs.")],
    policy: Annotated[Path | None, typer.Option(help="Appraisal policy TOML (default: the devnet's).")] = None,
) -> None:
    """Owner only: verify the order's report and manifest, then download and decrypt its outputs."""
    chosen, roots = trust(ctx, policy)
    output.mkdir(parents=True, exist_ok=True)
    with client(ctx) as cl:
        opened = fetch_result(cl, order_id, output, policy=chosen, roots=roots)
    for item in opened.verified.checklist.items:
        console.print(("[green]✓[/] " if item.passed else "[red]✗[/] ") + f"{item.name} {item.detail}")
    for path in opened.files:
        console.print(f"wrote {path}")


@app.command()
def reassign(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument()],
    machine: Annotated[str | None, typer.Option(help="The silent machine (default: the order's only one).")] = None,
) -> None:
    """Anyone: move an order off a machine that stopped heart-beating; it resumes elsewhere from its checkpoint."""
    with client(ctx) as cl:
        order = reassign_order(cl, order_id, machine)
    console.print(f"order [cyan]{order.order_id}[/] {order.state} on {', '.join(order.machines) or '(none)'}")


@app.command()
def resume(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument()],
    policy: Annotated[Path | None, typer.Option(help="Appraisal policy TOML (default: the devnet's).")] = None,
) -> None:
    """Order owner: grant the checkpoint a reassigned order resumes from to its new, appraised machine."""
    chosen, roots = trust(ctx, policy)
    with client(ctx) as cl:
        print_decisions(Keeper(cl, chosen, roots).resume(cl.ledger.order(order_id)))

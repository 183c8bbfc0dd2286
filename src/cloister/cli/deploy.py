"""`cloister deploy` and `cloister deployment …`: serve a model (and adapters) on attested replicas."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cloister.cli.common import client, console, options, print_json
from cloister.cli.trust import trust
from cloister.client.config import read_devnet_file
from cloister.client.deployments import (
    deploy,
    fund_deployment,
    inference_engine_offer,
    publish_adapter,
    stop_deployment,
    withdraw_credit,
)
from cloister.client.orders import fetch_result
from cloister.client.sdk import Client
from cloister.consensus.modes import parse_mode
from cloister.errors import ConfigError, InvalidState
from cloister.ledger.amounts import format_amount, parse_amount
from cloister.ledger.records import CANCELLED, INFERENCE, OPEN_ORDER_STATES, DeploymentTerms, Order

app = typer.Typer(help="Follow, fund and stop inference deployments.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _gateway(ctx: typer.Context, explicit: str | None) -> str:
    if explicit:
        return explicit
    devnet = read_devnet_file(options(ctx).resolved_home) or {}
    address = devnet.get("gateway_address")
    if not isinstance(address, str):
        raise ConfigError("name the gateway account that will serve the deployment with --gateway ADDRESS")
    return address


def _adapter_offer(ctx: typer.Context, cl: Client, source: str, engine_digest: str) -> str:
    """An adapter given as a folder is published; given as a fine-tuning order id, its result is fetched first."""
    path = Path(source)
    if path.is_dir():
        return publish_adapter(cl, path, engine_digest=engine_digest).offer_id
    if not source.startswith("or-"):
        raise ConfigError(f"--adapter {source!r} is neither an adapter folder nor a fine-tuning order id")
    policy, roots = trust(ctx, None)
    with tempfile.TemporaryDirectory(prefix="cloister-adapter-") as scratch:
        fetch_result(cl, source, Path(scratch), policy=policy, roots=roots)
        return publish_adapter(cl, Path(scratch) / "adapter", engine_digest=engine_digest).offer_id


def deploy_command(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model offer id of the base model.")],
    deposit: Annotated[str, typer.Option(help="Tokens to escrow for compute and per-hour prices.")],
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="A fine-tuning order id (its verified adapter is fetched) or an adapter folder (repeat)."),
    ] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Attested machines serving the model.")] = 3,
    price_per_1k_tokens: Annotated[str, typer.Option(help="What end users pay per 1000 tokens.")] = "0",
    consensus: Annotated[
        str | None, typer.Option(help="Default consensus: single, sampling:N, cross:p,N or obfuscated:N.")
    ] = None,
    gateway: Annotated[str | None, typer.Option(help="Gateway account (default: the devnet's).")] = None,
    engine: Annotated[str | None, typer.Option(help="Engine offer (default: the built-in chat_inference).")] = None,
    lease_hours: Annotated[int, typer.Option(min=1, help="Longest the deployment may run.")] = 24,
    as_json: JsonFlag = False,
) -> None:
    """Deploy a model and adapters on N attested replicas; keepers grant, each replica registers its endpoint."""
    # Everything that can be refused locally is checked before any adapter is published.
    gateway_address = _gateway(ctx, gateway)
    mode = None if consensus is None else str(parse_mode(consensus))
    price, escrow = parse_amount(price_per_1k_tokens), parse_amount(deposit)
    with client(ctx) as cl:
        engine_offer = inference_engine_offer(cl, engine)
        assert engine_offer.content_digest is not None  # engine offers always carry content
        adapters = [_adapter_offer(ctx, cl, source, engine_offer.content_digest) for source in adapter or []]
        order = deploy(
            cl,
            model=model,
            adapters=adapters,
            engine=engine_offer.offer_id,
            replicas=replicas,
            gateway=gateway_address,
            price_per_1k_tokens=price,
            consensus=mode,
            lease_hours=lease_hours,
            deposit=escrow,
        )
    if as_json:
        print_json(order.to_json())
        return
    console.print(f"deployment [cyan]{order.order_id}[/] {order.state} on {', '.join(order.machines)}")
    console.print("keepers grant to each replica; follow it with `cloister deployment show " + order.order_id + "`")


def _deployment(cl: Client, order_id: str) -> Order:
    order = cl.ledger.order(order_id)
    if order.kind != INFERENCE:
        raise InvalidState(
            f"order {order_id} is a {order.kind} order, not a deployment; see it with `cloister order show`"
        )
    return order


def _show(cl: Client, order: Order) -> None:
    terms = DeploymentTerms.of(order.params)
    console.print(
        f"deployment [cyan]{order.order_id}[/] {order.state}, gateway {terms.gateway}, "
        f"{format_amount(terms.price_per_1k_tokens)} per 1k tokens, consensus {terms.consensus or 'single'}"
    )
    table = Table("machine", "endpoint", "registered", "removed")
    endpoints = {e.machine_id: e for e in cl.ledger.endpoints(order.order_id)}
    granted: dict[str, set[str]] = {}
    for grant in cl.ledger.grants(order.order_id):
        granted.setdefault(grant.machine_id, set()).add(grant.offer_id)
    for machine_id in sorted({*order.machines, *endpoints}):
        e = endpoints.get(machine_id)
        if e is not None:
            table.add_row(machine_id, e.url, str(e.registered_at), str(e.removed_at or ""))
        elif order.state not in OPEN_ORDER_STATES:
            table.add_row(machine_id, "(never served)", "", "")
        elif granted.get(machine_id, set()) >= set(order.content_offers):
            table.add_row(machine_id, "(granted; the replica is starting)", "", "")
        else:
            table.add_row(machine_id, "(waiting for grants)", "", "")
    console.print(table)
    for dispute in cl.ledger.disputes(order.order_id):
        console.print(
            f"dispute {dispute.dispute_id}: slashed {', '.join(dispute.slashed) or 'nobody'} "
            f"({format_amount(dispute.slashed_amount)}), rewarded {', '.join(dispute.rewarded) or 'nobody'}"
        )


@app.command()
def show(ctx: typer.Context, order_id: str, as_json: JsonFlag = False) -> None:
    """A deployment's replicas, endpoints and disputes."""
    with client(ctx) as cl:
        order = _deployment(cl, order_id)
        if as_json:
            print_json(
                {
                    "order": order.to_json(),
                    "endpoints": [e.to_json() for e in cl.ledger.endpoints(order_id)],
                    "disputes": [d.to_json() for d in cl.ledger.disputes(order_id)],
                    "timeouts": [t.to_json() for t in cl.ledger.timeouts(order_id)],
                }
            )
            return
        _show(cl, order)


@app.command()
def fund(
    ctx: typer.Context,
    order_id: str,
    amount: Annotated[str, typer.Argument(help="Tokens to move into credit for this deployment.")],
) -> None:
    """Move tokens into credit for a deployment; the gateway charges usage from it."""
    with client(ctx) as cl:
        balance = fund_deployment(cl, order_id, parse_amount(amount))
    console.print(f"credit for {order_id}: {format_amount(balance)}")


@app.command()
def stop(ctx: typer.Context, order_id: str) -> None:
    """Stop a deployment: providers and per-hour owners are paid for the serving time, the rest is refunded
    (one still waiting for grants is cancelled)."""
    with client(ctx) as cl:
        order = stop_deployment(cl, order_id)
    if order.state == CANCELLED:
        console.print(f"deployment {order_id} cancelled before any replica served; the deposit is refunded")
        return
    console.print(f"deployment {order_id} {order.state} after {order.usage_seconds} serving seconds")


@app.command()
def withdraw(
    ctx: typer.Context,
    order_id: str,
    amount: Annotated[str | None, typer.Argument(help="Tokens to take back (default: all).")] = None,
) -> None:
    """Take back unspent credit once a deployment has stopped."""
    with client(ctx) as cl:
        taken = withdraw_credit(cl, order_id, None if amount is None else parse_amount(amount))
    console.print(f"withdrew {format_amount(taken)} from {order_id}")

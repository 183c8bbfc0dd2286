"""`cloister keeper run`: act for a content owner — appraise assigned machines and grant or refuse keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cloister.cli.common import client, console
from cloister.cli.trust import trust
from cloister.client.keeper import Decision, Keeper

app = typer.Typer(help="Grant keys to attested machines for your content, or refuse.", no_args_is_help=True)


def print_decisions(decisions: list[Decision]) -> None:
    for d in decisions:
        verdict = "[green]granted[/]" if d.granted else f"[yellow]refused[/]: {d.reason}"
        console.print(f"order {d.order_id} offer {d.offer_id} machine {d.machine_id}: {verdict}")


@app.command()
def run(
    ctx: typer.Context,
    policy: Annotated[Path | None, typer.Option(help="Your appraisal policy TOML (default: the devnet's).")] = None,
    allow_engine: Annotated[
        list[str] | None, typer.Option(help="Only these engine digests may read your content (repeat).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Decide what is pending now, then exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between looks at the ledger.")] = 2.0,
) -> None:
    """For every order that uses your offers: appraise its machines with your policy, then grant or refuse."""
    chosen, roots = trust(ctx, policy)
    with client(ctx) as cl:
        keeper = Keeper(cl, chosen, roots, frozenset(allow_engine) if allow_engine else None)
        while True:
            print_decisions(keeper.run_once())
            if once:
                return
            time.sleep(interval)

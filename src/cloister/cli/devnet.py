"""`cloister devnet …`: a whole network on this machine, detached from the terminal."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from cloister.cli.common import console, options, print_json
from cloister.client.devnet import Devnet


class LedgerKind(StrEnum):
    embedded = "embedded"
    evm = "evm"


app = typer.Typer(help="Start, stop and inspect the local devnet.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.command()
def up(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Ledger port on 127.0.0.1 (default: a free one).")] = None,
    ledger: Annotated[
        LedgerKind, typer.Option(help="embedded: SQLite served over HTTP; evm: anvil with the Solidity contracts.")
    ] = LedgerKind.embedded,
    nodes: Annotated[int, typer.Option(min=0, help="Also start this many simulated-TEE provider nodes.")] = 0,
    gateway: Annotated[bool, typer.Option(help="Also start the gateway that serves the devnet's deployments.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Start the ledger (server or anvil), the local blob store, the gateway and any nodes under
    $CLOISTER_HOME/devnet."""
    devnet = Devnet(options(ctx).resolved_home)
    info = devnet.up(port=port, ledger=ledger.value)
    if gateway:
        info = devnet.start_gateway()
    if nodes:
        info = {**info, "nodes": devnet.start_nodes(nodes)}
    if as_json:
        print_json(info)
        return
    console.print(f"devnet [green]up[/]: {info['ledger']} ledger {info['ledger_url']} chain {info['chain_id']}")
    console.print(f"blobs {info['blob_store']}; log {info['log']}")
    if gateway:
        console.print(f"gateway {info['gateway_url']} (account {info['gateway_address']})")
    if nodes:
        console.print(f"{nodes} node(s) starting; logs in {devnet.dir / 'nodes'}")


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop the devnet's nodes, gateway and ledger (its data stays for the next `up`)."""
    stopped = Devnet(options(ctx).resolved_home).down()
    console.print("devnet stopped" if stopped else "devnet was not running")


@app.command()
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Is the devnet running, where, and at what height."""
    state = Devnet(options(ctx).resolved_home).status()
    if as_json:
        print_json({"running": state.running, **state.info, "head": state.head.to_json() if state.head else None})
        return
    if not state.running:
        console.print("devnet is [red]not running[/]; start it with `cloister devnet up`")
        raise typer.Exit(1)
    table = Table(show_header=False)
    for key in ("ledger", "ledger_url", "chain_id", "blob_store", "pid", "log"):
        table.add_row(key, str(state.info.get(key, "")))
    table.add_row("height", str(state.head.height) if state.head else "not answering")
    console.print(table)

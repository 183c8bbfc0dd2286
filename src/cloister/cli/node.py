"""`cloister node …`: run a provider's machine — register it with attested evidence and execute its orders."""

from __future__ import annotations

from typing import Annotated

import typer

from cloister.cli.common import client, console, options
from cloister.client.devnet import Devnet
from cloister.ledger.amounts import parse_amount
from cloister.node.controller import ProviderNode
from cloister.node.keys import load_or_create_loader_identity
from cloister.node.platform import PlatformChoice, SimPlatform, detect_platform

app = typer.Typer(help="Run a provider node.", no_args_is_help=True)


@app.command()
def run(
    ctx: typer.Context,
    region: Annotated[str, typer.Option(help="Region the machine declares.")] = "local",
    price_per_hour: Annotated[str, typer.Option(help="Compute price in tokens per hour.")] = "0",
    once: Annotated[bool, typer.Option("--once", help="Register, run what is ready, and exit.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between looks at the ledger.")] = 2.0,
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 30.0,
    platform: Annotated[
        PlatformChoice,
        typer.Option(help="The TEE to attest: auto = configfs-tsm if this is a confidential VM; sim on a devnet."),
    ] = PlatformChoice.auto,
) -> None:
    """Register this machine with attested evidence and run the orders assigned to it until stopped."""
    home = options(ctx).resolved_home
    devnet = Devnet(home)
    with client(ctx) as cl:
        name = cl.account_name or cl.keystore.default_account_name() or "node"
        folder = home / "nodes" / name
        tee = detect_platform(platform, folder, sim=lambda: SimPlatform(devnet.sim_vendor(), f"{name}-chip"))
        node = ProviderNode(
            ledger=cl.ledger,
            store=cl.store,
            operator=cl.identity,
            loader=load_or_create_loader_identity(folder),
            platform=tee,
            folder=folder,
            region=region,
            price_per_hour=parse_amount(price_per_hour),
        )
        registration = node.register()
        console.print(f"node {name}: machine {registration.machine_id}, compute offer {registration.offer_id}")
        node.serve(once=once, poll_interval=poll, heartbeat_interval=heartbeat)

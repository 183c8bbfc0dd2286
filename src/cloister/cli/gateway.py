"""`cloister gateway …`: run the OpenAI-compatible inference gateway, and make API keys for it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloister.cli.common import client, console, options, print_json
from cloister.client.sdk import Client
from cloister.consensus.apikeys import make_api_key
from cloister.crypto.identity import is_address
from cloister.errors import ConfigError, RecordNotFound
from cloister.gateway.app import DEFAULT_PORT, serve
from cloister.gateway.service import Gateway, GatewayConfig

app = typer.Typer(help="Run the inference gateway and make API keys for it.", no_args_is_help=True)
key_app = typer.Typer(help="API keys: statements your account signs, checked by the gateway.", no_args_is_help=True)
app.add_typer(key_app, name="key")


@app.command()
def run(
    ctx: typer.Context,
    identity: Annotated[str, typer.Option(help="Keystore account the gateway acts as (deployments name it).")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    ledger: Annotated[str | None, typer.Option(help="Ledger URL (default: the devnet's).")] = None,
    settle_every: Annotated[float, typer.Option(help="Seconds between usage settlements on the ledger.")] = 60.0,
    commit_timeout: Annotated[
        float, typer.Option(help="Seconds a replica has to commit before it is reported and replaced.")
    ] = 60.0,
    folder: Annotated[
        Path | None, typer.Option(help="Where receipts and usage are kept (default: $CLOISTER_HOME/gateways/NAME).")
    ] = None,
) -> None:
    """Serve the deployments whose terms name IDENTITY's address, on http://HOST:PORT/v1."""
    opts = options(ctx)
    cl = Client(home=opts.resolved_home, account=identity, ledger_url=ledger or opts.ledger_url)
    config = GatewayConfig(
        folder=folder or opts.resolved_home / "gateways" / identity,
        commit_timeout=commit_timeout,
        settle_every=settle_every,
    )
    try:
        cl.account()
    except RecordNotFound:
        raise ConfigError(
            f"account {identity} ({cl.address}) is not registered on the ledger; the gateway signs transactions "
            f"with it: run `cloister account create {identity}` against this ledger first"
        ) from None
    gateway = Gateway(cl.identity, cl.ledger, config)
    console.print(f"gateway {cl.address} on http://{host}:{port}/v1 (receipts in {config.folder})")
    try:
        serve(gateway, host, port)
    finally:
        cl.close()


@key_app.command("create")
def create_key(
    ctx: typer.Context,
    gateway: Annotated[str, typer.Option(help="Address of the gateway the key is for.")],
    consensus: Annotated[
        str | None, typer.Option(help="Default consensus mode for requests with this key, e.g. sampling:3.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Print an API key for the current account at GATEWAY (signed locally; nothing is sent anywhere)."""
    if not is_address(gateway):
        raise ConfigError(f"--gateway must be the gateway's ledger address (cl…), got {gateway!r}")
    with client(ctx) as cl:
        key = make_api_key(cl.identity, gateway, consensus)
        account = cl.address
    if as_json:
        print_json({"api_key": key, "account": account, "gateway": gateway, "consensus": consensus})
        return
    typer.echo(key)  # the key alone on stdout, for KEY=$(cloister gateway key create …)

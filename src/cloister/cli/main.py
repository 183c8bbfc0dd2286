"""The `cloister` command: thin — it parses, calls the client, prints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cloister import __version__
from cloister.cli import account, content, demo, devnet, engine, keeper, ledger, node, offer, order, verify
from cloister.cli import deploy as deploy_cli
from cloister.cli import gateway as gateway_cli
from cloister.cli import security as security_cli
from cloister.cli.common import Options, err_console
from cloister.errors import CloisterError

app = typer.Typer(
    name="cloister",
    help="Confidential, verifiable AI: lease models, share data and rent attested compute.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(account.app, name="account")
app.add_typer(devnet.app, name="devnet")
app.add_typer(offer.app, name="offer")
app.add_typer(content.app, name="content")
app.add_typer(ledger.app, name="ledger")
app.add_typer(verify.app, name="verify")
app.add_typer(order.app, name="order")
app.add_typer(engine.app, name="engine")
app.add_typer(node.app, name="node")
app.add_typer(keeper.app, name="keeper")
app.add_typer(security_cli.app, name="security")
app.add_typer(gateway_cli.app, name="gateway")
app.command(name="deploy")(deploy_cli.deploy_command)
app.add_typer(deploy_cli.app, name="deployment")
app.command(name="demo")(demo.demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cloister {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(envvar="CLOISTER_HOME", help="Keystore and devnet folder (default ~/.cloister)."),
    ] = None,
    account_name: Annotated[
        str | None, typer.Option("--account", "-a", envvar="CLOISTER_ACCOUNT", help="Account to act as.")
    ] = None,
    ledger_url: Annotated[
        str | None,
        typer.Option("--ledger", envvar="CLOISTER_LEDGER", help="Ledger URL (default: the devnet's)."),
    ] = None,
    blob_store: Annotated[
        str | None,
        typer.Option(
            "--blobs",
            envvar="CLOISTER_BLOBS",
            help="Blob store: a folder or s3://bucket (default: the devnet's).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ctx.obj = Options(home=home, account=account_name, ledger_url=ledger_url, blob_store=blob_store)


def main() -> None:
    """Entry point: typed errors become one red line and exit status 1, never a traceback."""
    try:
        app()
    except CloisterError as exc:
        err_console.print(f"[red]error[/] ({exc.code}): {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)

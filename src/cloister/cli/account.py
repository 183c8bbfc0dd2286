"""`cloister account …`: local keys and their ledger accounts."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cloister.cli.common import client, console, options, print_json
from cloister.crypto.identity import is_address
from cloister.errors import RecordNotFound
from cloister.keystore import Keystore
from cloister.ledger.amounts import format_amount, parse_amount

app = typer.Typer(help="Create accounts, see balances, draw devnet funds.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A local name for the account, e.g. alice.")],
    fund: Annotated[str | None, typer.Option(help="Also draw this many tokens from the devnet faucet.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Generate keys for NAME in the keystore and register the account on the ledger."""
    with client(ctx) as cl:
        receipt = cl.create_account(name)
        if fund is not None:
            cl.fund(parse_amount(fund))
        account = cl.account()
    if as_json:
        print_json({"name": name, "address": account.address, "height": receipt.height, "balance": account.balance})
        return
    console.print(f"created [bold]{name}[/] [cyan]{account.address}[/] (balance {format_amount(account.balance)})")


@app.command("list")
def list_accounts(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the accounts in the local keystore."""
    store = Keystore(options(ctx).resolved_home)
    entries = store.list_accounts()
    default = store.default_account_name()
    if as_json:
        print_json([{"name": e.name, "address": e.address, "default": e.name == default} for e in entries])
        return
    if not entries:
        console.print(f"no accounts in {store.home}; create one with `cloister account create NAME`")
        return
    table = Table("name", "address", "default")
    for entry in entries:
        table.add_row(entry.name, entry.address, "*" if entry.name == default else "")
    console.print(table)


@app.command()
def show(
    ctx: typer.Context,
    who: Annotated[str | None, typer.Argument(help="Account name or address (default: the current account).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show an account's balance, stake and nonce as the ledger records them."""
    with client(ctx) as cl:
        if who is None:
            address = cl.address
        elif is_address(who):
            address = who
        else:
            address = cl.keystore.load_account(who).address
        try:
            account = cl.account(address)
        except RecordNotFound:
            raise RecordNotFound(f"{address} has no account on this ledger yet") from None
    if as_json:
        print_json(account.to_json())
        return
    table = Table(show_header=False)
    table.add_row("name", account.name)
    table.add_row("address", account.address)
    table.add_row("balance", format_amount(account.balance))
    table.add_row("stake", format_amount(account.stake))
    table.add_row("nonce", str(account.nonce))
    console.print(table)


@app.command()
def fund(
    ctx: typer.Context,
    amount: Annotated[str, typer.Argument(help="Tokens to draw, e.g. 100 or 2.5.")],
    as_json: JsonFlag = False,
) -> None:
    """Draw tokens from the devnet faucet into the current account."""
    with client(ctx) as cl:
        cl.fund(parse_amount(amount))
        account = cl.account()
    if as_json:
        print_json(account.to_json())
        return
    console.print(f"{account.name}: balance {format_amount(account.balance)}")


@app.command()
def transfer(
    ctx: typer.Context,
    to: Annotated[str, typer.Argument(help="Recipient address.")],
    amount: Annotated[str, typer.Argument(help="Tokens to send.")],
) -> None:
    """Send tokens to another account."""
    with client(ctx) as cl:
        receipt = cl.transfer(to, parse_amount(amount))
    console.print(f"sent {amount} to {to} at height {receipt.height}")


@app.command()
def use(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Account name.")]) -> None:
    """Make NAME the default account for later commands."""
    Keystore(options(ctx).resolved_home).set_default_account(name)
    console.print(f"default account is now {name}")

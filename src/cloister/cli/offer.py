"""`cloister offer …`: publish encrypted content as offers and browse the market."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.filesize import decimal
from rich.table import Table

from cloister.cli.common import client, console, print_json, progress_bars
from cloister.crypto.digest import parse_digest
from cloister.errors import ConfigError
from cloister.ledger.amounts import format_amount, parse_amount
from cloister.ledger.records import Offer, Pricing, Restrictions

app = typer.Typer(help="Publish and browse offers.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class ContentKind(StrEnum):
    model = "model"
    dataset = "dataset"
    engine = "engine"


def pricing_from_options(per_hour: str | None, fixed: str | None, free: bool, revenue_share: str | None) -> Pricing:
    chosen = [
        name for name, value in (("per-hour", per_hour), ("fixed", fixed), ("revenue-share", revenue_share)) if value
    ]
    if free:
        chosen.append("free")
    if len(chosen) != 1:
        raise ConfigError(
            "choose exactly one price: --price-per-hour X, --price-fixed X, --free or --revenue-share PCT"
        )
    if per_hour:
        return Pricing("per_hour", parse_amount(per_hour), 0)
    if fixed:
        return Pricing("fixed", parse_amount(fixed), 0)
    if revenue_share:
        try:
            basis_points = Decimal(revenue_share) * 100
        except InvalidOperation:
            raise ConfigError(f"--revenue-share takes a percentage like 10 or 2.5, not {revenue_share!r}") from None
        if basis_points != basis_points.to_integral_value():
            raise ConfigError("--revenue-share has at most two decimals")
        return Pricing("revenue_share", 0, int(basis_points))
    return Pricing("free", 0, 0)


def describe_price(pricing: Pricing) -> str:
    if pricing.model == "per_hour":
        return f"{format_amount(pricing.amount)}/h"
    if pricing.model == "fixed":
        return f"{format_amount(pricing.amount)} fixed"
    if pricing.model == "revenue_share":
        return f"{pricing.share_bps / 100:g}% of revenue"
    return "free"


@app.command()
def publish(
    ctx: typer.Context,
    kind: Annotated[ContentKind, typer.Argument(help="What the file is.")],
    path: Annotated[Path, typer.Argument(help="The file to encrypt, upload and offer.", exists=True, dir_okay=False)],
    price_per_hour: Annotated[str | None, typer.Option(help="Tokens per hour of use.")] = None,
    price_fixed: Annotated[str | None, typer.Option(help="Tokens once per order.")] = None,
    free: Annotated[bool, typer.Option("--free", help="No charge.")] = False,
    revenue_share: Annotated[str | None, typer.Option(help="Percent of inference revenue.")] = None,
    allow_platform: Annotated[list[str] | None, typer.Option(help="TEE platform allowed to read it (repeat).")] = None,
    allow_region: Annotated[list[str] | None, typer.Option(help="Region allowed to run it (repeat).")] = None,
    allow_engine: Annotated[list[str] | None, typer.Option(help="Engine digest allowed to read it (repeat).")] = None,
    max_lease_hours: Annotated[int | None, typer.Option(min=1, help="Longest lease an order may ask for.")] = None,
    name: Annotated[str | None, typer.Option(help="Display name (default: the file name).")] = None,
    description: Annotated[str, typer.Option(help="What it is, for the market listing.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Encrypt PATH with a fresh key, upload the ciphertext and record an offer on the ledger."""
    pricing = pricing_from_options(price_per_hour, price_fixed, free, revenue_share)
    engines = tuple(allow_engine or ())
    for digest in engines:
        parse_digest(digest)
    restrictions = Restrictions(
        platforms=tuple(allow_platform or ()),
        regions=tuple(allow_region or ()),
        engine_digests=engines,
        max_lease_hours=max_lease_hours,
    )
    with progress_bars(not as_json) as progress, client(ctx, progress=progress) as cl:
        offer = cl.publish(
            kind.value, path, pricing=pricing, restrictions=restrictions, name=name, description=description
        )
    if as_json:
        print_json(offer.to_json())
        return
    console.print(f"published {offer.kind} [bold]{offer.name}[/] as offer [cyan]{offer.offer_id}[/]")
    console.print(f"content {offer.content_digest} ({offer.size} bytes) at {offer.blob_uri}")


def describe_restrictions(restrictions: Restrictions) -> str:
    parts = []
    if restrictions.platforms:
        parts.append("platform " + "|".join(restrictions.platforms))
    if restrictions.regions:
        parts.append("region " + "|".join(restrictions.regions))
    if restrictions.engine_digests:
        parts.append(f"{len(restrictions.engine_digests)} engine(s)")
    if restrictions.max_lease_hours:
        parts.append(f"lease ≤{restrictions.max_lease_hours}h")
    return ", ".join(parts) or "-"


def offers_table(offers: list[Offer]) -> Table:
    """The market at a glance; `offer show` has every field."""
    table = Table()
    table.add_column("offer", no_wrap=True)
    table.add_column("kind")
    table.add_column("name", overflow="fold")
    table.add_column("price", no_wrap=True)
    table.add_column("size", no_wrap=True)
    table.add_column("owner", no_wrap=True)
    table.add_column("allowed", overflow="fold")
    for offer in offers:
        table.add_row(
            offer.offer_id,
            offer.kind,
            offer.name,
            describe_price(offer.pricing),
            decimal(offer.size) if offer.size is not None else f"{len(offer.machine_ids)} machine(s)",
            offer.owner[:8] + "…",
            describe_restrictions(offer.restrictions),
        )
    return table


@app.command("list")
def list_offers(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="Only offers of this kind.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only offers of this owner address.")] = None,
    include_retired: Annotated[bool, typer.Option(help="Also list retired offers.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List the offers on the market."""
    with client(ctx) as cl:
        offers = cl.ledger.offers(kind=kind, owner=owner, include_retired=include_retired)
    if as_json:
        print_json([offer.to_json() for offer in offers])
        return
    if not offers:
        console.print("no offers yet; publish one with `cloister offer publish`")
        return
    console.print(offers_table(offers))


@app.command()
def show(
    ctx: typer.Context,
    offer_id: Annotated[str, typer.Argument(help="The offer id, e.g. of-1a2b….")],
    as_json: JsonFlag = False,
) -> None:
    """Show one offer in full."""
    with client(ctx) as cl:
        offer = cl.ledger.offer(offer_id)
    if as_json:
        print_json(offer.to_json())
        return
    table = Table(show_header=False)
    for key, value in offer.to_json().items():
        table.add_row(key, str(value))
    table.add_row("price", describe_price(offer.pricing))
    console.print(table)

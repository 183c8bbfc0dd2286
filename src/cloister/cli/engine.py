"""`cloister engine …`: content-addressed engine bundles — their digest, and publishing them as offers."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from cloister.cli.common import client, console, print_json
from cloister.engines.bundle import builtin_engine, bundle_digest, pack
from cloister.ledger.amounts import parse_amount
from cloister.ledger.records import Pricing, Restrictions

app = typer.Typer(help="Engine bundles: digests and offers.", no_args_is_help=True)


def _folder(name_or_path: str) -> Path:
    path = Path(name_or_path)
    return path if path.is_dir() else builtin_engine(name_or_path)


@app.command()
def digest(name_or_path: Annotated[str, typer.Argument(help="A built-in engine name or a bundle folder.")]) -> None:
    """The bundle's reproducible digest: what owners pass to `--allow-engine`."""
    console.print(bundle_digest(_folder(name_or_path)))


@app.command()
def publish(
    ctx: typer.Context,
    name_or_path: Annotated[str, typer.Argument(help="A built-in engine name (lora_finetune) or a bundle folder.")],
    price_fixed: Annotated[str, typer.Option(help="Tokens per order.")] = "0",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Pack the engine deterministically and publish it as an engine offer."""
    folder = _folder(name_or_path)
    price = parse_amount(price_fixed)
    pricing = Pricing("fixed", price, 0) if price else Pricing("free", 0, 0)
    with tempfile.TemporaryDirectory() as scratch, client(ctx) as cl:
        bundle = Path(scratch) / f"{folder.name}.bundle"
        bundle.write_bytes(pack(folder))
        offer = cl.publish("engine", bundle, pricing=pricing, restrictions=Restrictions(), name=folder.name)
    if as_json:
        print_json(offer.to_json())
        return
    console.print(f"engine {folder.name} offer [cyan]{offer.offer_id}[/] digest {offer.content_digest}")

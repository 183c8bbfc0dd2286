"""`cloister ledger …`: serve, audit and export the embedded ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cloister.cli.common import console, options, print_json
from cloister.client.devnet import Devnet
from cloister.errors import ConfigError
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.server import serve as serve_ledger
from cloister.ledger.verify import verify_ledger

app = typer.Typer(help="Serve, verify and export the embedded ledger.", no_args_is_help=True)
DbOption = Annotated[
    Path | None, typer.Option("--db", help="Ledger database (default: the devnet's, under $CLOISTER_HOME).")
]
EXPORT_PAGE = 500


def _db(ctx: typer.Context, db: Path | None) -> Path:
    path = db or Devnet(options(ctx).resolved_home).db_path
    if not path.exists():
        raise ConfigError(f"no ledger database at {path}; pass --db or start a devnet with `cloister devnet up`")
    return path


@app.command()
def serve(
    ctx: typer.Context,
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8545,
) -> None:
    """Serve the ledger's JSON API over HTTP (what `cloister devnet up` runs in the background)."""
    serve_ledger(_db(ctx, db), host=host, port=port)


@app.command()
def verify(ctx: typer.Context, db: DbOption = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Replay the whole log from genesis: hash chain, signatures, contract results and stored state."""
    report = verify_ledger(_db(ctx, db))
    if as_json:
        print_json(
            {
                "ok": True,
                "height": report.height,
                "head_hash": report.head_hash,
                "state_root": report.state_root,
            }
        )
        return
    console.print(f"[green]ledger verified[/]: {report.height} blocks replayed, head {report.head_hash}")
    console.print(f"state root {report.state_root}")


@app.command()
def export(
    ctx: typer.Context,
    db: DbOption = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="JSON Lines file (default: stdout).")] = None,
) -> None:
    """Write every block (signed transaction, events, state root, hashes) as JSON Lines."""
    path = _db(ctx, db)
    sink = output.open("w") if output else sys.stdout
    count = 0
    try:
        with EmbeddedLedger.open(path) as ledger:
            start = 1
            while page := ledger.blocks(start, EXPORT_PAGE):
                for block in page:
                    sink.write(json.dumps(block, sort_keys=True) + "\n")
                count += len(page)
                start = page[-1]["height"] + 1
    finally:
        if output:
            sink.close()
    if output:
        console.print(f"exported {count} blocks to {output}")

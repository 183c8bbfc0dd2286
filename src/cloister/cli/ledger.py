"""`cloister ledger …`: serve, audit and export the embedded ledger."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from cloister.cli.common import console, options, print_json
from cloister.client.devnet import Devnet
from cloister.errors import ConfigError
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import Genesis
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
def deploy(
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of an Ethereum-compatible node.")],
    key_file: Annotated[
        Path, typer.Option(help="File holding the funded deployer's private key (hex).", exists=True, dir_okay=False)
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the deployment record.")] = Path(
        "deployment.json"
    ),
    genesis_file: Annotated[
        Path | None, typer.Option("--genesis", help="Genesis JSON (default: a new chain with the production policy).")
    ] = None,
    chain_id: Annotated[str, typer.Option(help="Cloister chain id for a new genesis.")] = "cloister-mainnet",
    registrar: Annotated[
        str | None, typer.Option(help="Attestation registrar address (default: the deployer's).")
    ] = None,
) -> None:
    """Deploy the Cloister contracts to any EVM chain and write the deployment record clients load."""
    from cloister.ledger.evm.deploy import deploy_to
    from cloister.ledger.evm.devnet import load_key

    deployer = load_key(key_file)
    if genesis_file is not None:
        try:
            chosen = Genesis.from_json(json.loads(genesis_file.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read genesis {genesis_file}: {exc}") from None
    else:
        chosen = Genesis(chain_id=chain_id, time=int(time.time()))
    if output.exists():
        raise ConfigError(f"{output} exists; choose another --output")
    deployment = deploy_to(rpc, deployer, chosen, registrar or deployer.address)
    deployment.save(output)
    console.print(
        f"deployed chain {chosen.chain_id} at {deployment.address} (block {deployment.block}); wrote {output}"
    )


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

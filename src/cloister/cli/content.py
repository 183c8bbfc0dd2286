"""`cloister content …`: get back, in the clear, what you published."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloister.cli.common import client, console, progress_bars
from cloister.crypto.digest import parse_digest

app = typer.Typer(help="Download your own content.", no_args_is_help=True)


@app.command()
def download(
    ctx: typer.Context,
    digest: Annotated[str, typer.Argument(help="Content digest, sha256:….")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the plaintext.")],
    force: Annotated[bool, typer.Option(help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Download and decrypt content this account published (owner only), checked against its digest."""
    parse_digest(digest)
    if output.exists() and not force:
        raise typer.BadParameter(f"{output} exists; pass --force to overwrite", param_hint="--output")
    with progress_bars() as progress, client(ctx, progress=progress) as cl:
        cl.download(digest, output)
    console.print(f"wrote {output} ({output.stat().st_size} bytes, {digest} verified)")

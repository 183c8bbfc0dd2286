"""What every command shares: global options, the client, output (rich or JSON) and progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cloister.client.sdk import Client, ProgressFactory, no_progress
from cloister.keystore import default_home

# Logs and pipes get 120 columns rather than rich's 80, so tables of ids and digests stay readable.
_PIPE_WIDTH = 120
console = Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _PIPE_WIDTH)


@dataclass
class Options:
    """Global options, set once by the top-level callback."""

    home: Path | None = None
    account: str | None = None
    ledger_url: str | None = None
    blob_store: str | None = None

    @property
    def resolved_home(self) -> Path:
        return (self.home or default_home()).expanduser()


def options(ctx: typer.Context) -> Options:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Options) else Options()


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[ProgressFactory]:
    """Rich progress bars on stderr, one per phase; a no-op when disabled (e.g. ``--json``)."""
    if not enabled:
        yield no_progress
        return
    columns = (
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as bars:

        def start(description: str, total: int | None) -> Callable[[int], None]:
            task = bars.add_task(description, total=total)
            return lambda advance: bars.advance(task, advance)

        yield start


@contextmanager
def client(ctx: typer.Context, *, progress: ProgressFactory = no_progress) -> Iterator[Client]:
    opts = options(ctx)
    with Client(
        home=opts.resolved_home,
        account=opts.account,
        ledger_url=opts.ledger_url,
        blob_store=opts.blob_store,
        progress=progress,
    ) as cl:
        yield cl


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")

"""Where the ledger and the blob store are: explicit options, then environment, then the running devnet."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cloister.errors import ConfigError

LEDGER_ENV = "CLOISTER_LEDGER"
BLOBS_ENV = "CLOISTER_BLOBS"


def devnet_file(home: Path) -> Path:
    return home / "devnet" / "devnet.json"


def read_devnet_file(home: Path) -> dict[str, Any] | None:
    path = devnet_file(home)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); run `cloister devnet down` and `up` again") from None
    return data if isinstance(data, dict) else None


def _resolve(home: Path, explicit: str | None, env: str, field: str, what: str) -> str:
    value = explicit or os.environ.get(env) or (read_devnet_file(home) or {}).get(field)
    if not value:
        raise ConfigError(f"no {what} configured: start one with `cloister devnet up` (home {home}) or set {env}")
    return str(value)


def resolve_ledger_url(home: Path, explicit: str | None = None) -> str:
    """An explicit URL wins, then ``$CLOISTER_LEDGER``, then the devnet of ``home``."""
    return _resolve(home, explicit, LEDGER_ENV, "ledger_url", "ledger")


def resolve_blob_store(home: Path, explicit: str | None = None) -> str:
    """An explicit store wins, then ``$CLOISTER_BLOBS``, then the devnet of ``home``."""
    return _resolve(home, explicit, BLOBS_ENV, "blob_store", "blob store")

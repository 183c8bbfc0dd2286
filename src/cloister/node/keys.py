"""The loader keys of one node, kept in its folder.

On real hardware these keys are created inside the TEE (the confidential VM) and never leave its encrypted
memory; the TCB's report data binds them, so a key that left the TEE would be a key the evidence vouches for
while the host holds it. On a devnet they live in ``<node folder>/loader.key`` (mode 0600).
"""

from __future__ import annotations

import json
from pathlib import Path

from cloister.crypto.identity import Identity
from cloister.errors import ConfigError
from cloister.keystore import write_private_file

LOADER_KEY_FILE = "loader.key"


def load_or_create_loader_identity(folder: Path) -> Identity:
    """The node's loader identity, created (0600) on first use."""
    path = Path(folder) / LOADER_KEY_FILE
    if not path.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        identity = Identity.generate()
        signing, sealing = identity.private_bytes()
        write_private_file(path, json.dumps({"signing": signing.hex(), "sealing": sealing.hex()}).encode())
        return identity
    try:
        data = json.loads(path.read_text())
        return Identity.from_private_bytes(bytes.fromhex(data["signing"]), bytes.fromhex(data["sealing"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the loader key {path} is unreadable ({exc}); remove it to create new loader keys") from None

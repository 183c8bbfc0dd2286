"""Where the EVM tools live: ``solc`` (solc-js, run by node) and ``anvil``, both installed by ``npm ci``.

The npm packages are pinned in ``package.json``/``package-lock.json`` at the checkout's root; the anvil binary
ships inside the platform package ``@foundry-rs/anvil-<os>-<arch>``, so no install script downloads anything.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

from cloister.errors import ConfigError

ANVIL_ENV = "CLOISTER_ANVIL"
NODE_MODULES_ENV = "CLOISTER_NODE_MODULES"

_OS = {"linux": "linux", "darwin": "darwin", "win32": "win32"}
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def checkout_root() -> Path:
    """The source checkout this package runs from (the folder holding ``package.json`` and ``contracts/``)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "package.json").is_file() and (parent / "contracts").is_dir():
            return parent
    raise ConfigError(
        "the Solidity sources are not next to this installation of cloister; run from a source checkout "
        f"(with contracts/ and package.json) or set {NODE_MODULES_ENV}"
    )


def node_modules() -> Path:
    explicit = os.environ.get(NODE_MODULES_ENV)
    path = Path(explicit) if explicit else checkout_root() / "node_modules"
    if not path.is_dir():
        raise ConfigError(f"no {path}: run `npm ci` in {path.parent} to install solc and anvil")
    return path


def anvil_binary() -> Path:
    """``$CLOISTER_ANVIL``, else the binary of the pinned ``@foundry-rs/anvil`` package, else ``anvil`` on PATH."""
    explicit = os.environ.get(ANVIL_ENV)
    if explicit:
        return Path(explicit)
    os_name, arch = _OS.get(sys.platform), _ARCH.get(platform.machine().lower())
    if os_name and arch:
        try:
            candidate = node_modules() / "@foundry-rs" / f"anvil-{os_name}-{arch}" / "bin" / "anvil"
        except ConfigError:
            candidate = None
        if candidate is not None and candidate.is_file():
            return candidate
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise ConfigError("anvil is not installed: run `npm ci` in the Cloister checkout (or set $CLOISTER_ANVIL)")


def node_binary() -> str:
    found = shutil.which("node")
    if not found:
        raise ConfigError("node is not installed; install Node.js 18 or later to compile the contracts")
    return found

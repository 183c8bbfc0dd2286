"""The local keystore under ``$CLOISTER_HOME`` (default ``~/.cloister``).

It holds each named account's private keys and the content keys (DEKs) of everything the user published. Every
file is created 0600 inside 0700 folders, written atomically, and never overwritten by accident. Keys leave this
folder only sealed to an attested key (see :mod:`cloister.crypto.grants`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloister.crypto.digest import parse_digest
from cloister.crypto.identity import Identity
from cloister.errors import AccountExists, AccountNotFound, ConfigError, KeyNotFound, KeystoreError

HOME_ENV = "CLOISTER_HOME"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_FILE_MODE = 0o600
_DIR_MODE = 0o700


def default_home() -> Path:
    """``$CLOISTER_HOME`` if set, else ``~/.cloister``."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cloister"


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` atomically with mode 0600; refuse to replace an existing file unless asked."""
    path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise KeystoreError(f"{path} already exists; refusing to overwrite key material")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise KeystoreError(f"{path} is not a keystore file")
    return data


@dataclass(frozen=True)
class AccountEntry:
    name: str
    address: str


class Keystore:
    """Named accounts and content keys in one home folder."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = (home or default_home()).expanduser()

    @property
    def accounts_dir(self) -> Path:
        return self.home / "accounts"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def config_path(self) -> Path:
        return self.home / "config.json"

    # --- accounts -------------------------------------------------------------------------------------------

    @staticmethod
    def check_name(name: str) -> str:
        if not _NAME_RE.match(name):
            raise ConfigError(f"account name {name!r} is not allowed: use 1-32 lower-case letters, digits, '-' or '_'")
        return name

    def _account_path(self, name: str) -> Path:
        return self.accounts_dir / f"{self.check_name(name)}.json"

    def create_account(self, name: str, *, service: bool = False) -> Identity:
        """Generate keys for a new named account; the first account becomes the default, unless it is a
        ``service`` account (a devnet's gateway or node), which a user never means by "my account"."""
        path = self._account_path(name)
        if path.exists():
            raise AccountExists(f"account {name!r} already exists in {self.home}")
        identity = Identity.generate()
        signing, sealing = identity.private_bytes()
        body = {
            "name": name,
            "address": identity.address,
            "signing_key": signing.hex(),
            "sealing_key": sealing.hex(),
        }
        write_private_file(path, json.dumps(body, indent=2).encode())
        if self.default_account_name() is None and not service:
            self.set_default_account(name)
        return identity

    def load_account(self, name: str | None = None) -> Identity:
        """The named account, or the default one."""
        name = name or self.default_account_name()
        if name is None:
            raise AccountNotFound(f"no account in {self.home}; create one with `cloister account create NAME`")
        path = self._account_path(name)
        if not path.exists():
            known = ", ".join(entry.name for entry in self.list_accounts()) or "none"
            raise AccountNotFound(f"no account {name!r} in {self.home} (known: {known})")
        data = _read_json(path)
        try:
            identity = Identity.from_private_bytes(
                bytes.fromhex(data["signing_key"]), bytes.fromhex(data["sealing_key"])
            )
        except (KeyError, ValueError) as exc:
            raise KeystoreError(f"{path} is damaged: {exc}") from None
        if identity.address != data.get("address"):
            raise KeystoreError(f"{path} is damaged: its keys do not match its address")
        return identity

    def list_accounts(self) -> list[AccountEntry]:
        if not self.accounts_dir.is_dir():
            return []
        entries = []
        for path in sorted(self.accounts_dir.glob("*.json")):
            data = _read_json(path)
            entries.append(AccountEntry(path.stem, str(data.get("address", "?"))))
        return entries

    def default_account_name(self) -> str | None:
        if not self.config_path.exists():
            return None
        value = _read_json(self.config_path).get("default_account")
        return value if isinstance(value, str) else None

    def set_default_account(self, name: str) -> None:
        if not self._account_path(name).exists():
            raise AccountNotFound(f"no account {name!r} in {self.home}")
        config = _read_json(self.config_path) if self.config_path.exists() else {}
        config["default_account"] = name
        write_private_file(self.config_path, json.dumps(config, indent=2).encode(), overwrite=True)

    # --- content keys ---------------------------------------------------------------------------------------

    def _key_path(self, digest: str) -> Path:
        return self.keys_dir / f"{parse_digest(digest).hex()}.json"

    def put_content_key(self, digest: str, key: bytes, *, account: str) -> None:
        """Remember the DEK of content we published; a second, different key for the same digest is refused."""
        if len(key) != 32:
            raise KeystoreError("a content key is 32 bytes")
        path = self._key_path(digest)
        if path.exists():
            if self.content_key(digest) != key:
                raise KeystoreError(f"a different content key for {digest} is already stored in {path}")
            return
        body = {"digest": digest, "key": key.hex(), "account": account}
        write_private_file(path, json.dumps(body, indent=2).encode())

    def has_content_key(self, digest: str) -> bool:
        return self._key_path(digest).exists()

    def content_key(self, digest: str) -> bytes:
        path = self._key_path(digest)
        if not path.exists():
            raise KeyNotFound(
                f"no content key for {digest} in {self.home}: only the owner who published it holds the key"
            )
        data = _read_json(path)
        try:
            key = bytes.fromhex(data["key"])
        except (KeyError, ValueError) as exc:
            raise KeystoreError(f"{path} is damaged: {exc}") from None
        if len(key) != 32 or data.get("digest") != digest:
            raise KeystoreError(f"{path} is damaged: wrong key length or digest")
        return key

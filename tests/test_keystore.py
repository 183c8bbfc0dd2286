"""The keystore: named accounts, content keys, permissions, and clear errors."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from cloister.crypto.digest import digest_bytes
from cloister.errors import AccountExists, AccountNotFound, ConfigError, KeyNotFound, KeystoreError
from cloister.keystore import Keystore, default_home


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_home_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOISTER_HOME", str(tmp_path / "h"))
    assert default_home() == tmp_path / "h"
    monkeypatch.delenv("CLOISTER_HOME")
    assert default_home() == Path.home() / ".cloister"


def test_accounts_round_trip_with_private_permissions(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    alice = store.create_account("alice")
    bob = store.create_account("bob")
    assert store.load_account("alice").address == alice.address
    assert store.load_account().address == alice.address, "the first account becomes the default"
    store.set_default_account("bob")
    assert store.load_account().address == bob.address
    assert [e.name for e in store.list_accounts()] == ["alice", "bob"]
    assert mode(tmp_path / "accounts" / "alice.json") == 0o600
    assert mode(tmp_path / "accounts") == 0o700
    assert mode(tmp_path / "config.json") == 0o600


def test_account_errors_say_what_to_do(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    with pytest.raises(AccountNotFound, match="cloister account create"):
        store.load_account()
    store.create_account("alice")
    with pytest.raises(AccountExists):
        store.create_account("alice")
    with pytest.raises(AccountNotFound, match="known: alice"):
        store.load_account("mallory")
    for bad in ("", "Alice", "../x", "a" * 40, "a b"):
        with pytest.raises(ConfigError):
            store.create_account(bad)


def test_damaged_account_file_is_refused(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    store.create_account("alice")
    path = tmp_path / "accounts" / "alice.json"
    body = json.loads(path.read_text())
    other = store.create_account("eve")
    body["address"] = other.address
    path.write_text(json.dumps(body))
    with pytest.raises(KeystoreError, match="do not match"):
        store.load_account("alice")
    path.write_text("{not json")
    with pytest.raises(KeystoreError, match="cannot read"):
        store.load_account("alice")


def test_content_keys_are_private_and_never_replaced(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    digest = digest_bytes(b"model weights")
    with pytest.raises(KeyNotFound, match="only the owner"):
        store.content_key(digest)
    key = bytes(range(32))
    store.put_content_key(digest, key, account="alice")
    store.put_content_key(digest, key, account="alice")
    assert store.content_key(digest) == key
    with pytest.raises(KeystoreError, match="different content key"):
        store.put_content_key(digest, bytes(32), account="alice")
    (path,) = (tmp_path / "keys").iterdir()
    assert mode(path) == 0o600
    with pytest.raises(KeystoreError):
        store.put_content_key(digest, b"short", account="alice")

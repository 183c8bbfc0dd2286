"""`verify_ledger`: a clean log replays; any hand edit of the SQLite file names the first bad height."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.ledger.conftest import FakeClock

from cloister.crypto.identity import Identity
from cloister.errors import ConfigError, LedgerCorrupted
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.envelope import SignedTransaction, Transaction
from cloister.ledger.transactions import FaucetDrip
from cloister.ledger.verify import verify_ledger
from cloister.ledger.wallet import Wallet


@dataclass(frozen=True)
class Log:
    """A closed ledger file with six known blocks.

    1 alice registers · 2 bob registers · 3 alice faucet · 4 alice → bob · 5 bob → alice · 6 bob faucet.
    Alice's account row is last written by block 5; each block emits one event, so event seq = height.
    """

    path: Path
    alice: str
    bob: str


@pytest.fixture
def log(embedded: EmbeddedLedger, clock: FakeClock) -> Log:
    alice, bob = Wallet(Identity.generate(), embedded), Wallet(Identity.generate(), embedded)
    alice.register("alice")
    bob.register("bob")
    alice.faucet(1_000)
    clock.advance(10)
    alice.transfer(bob.address, 100)
    clock.advance(10)
    bob.transfer(alice.address, 30)
    bob.faucet(5)
    embedded.close()
    return Log(embedded.path, alice.address, bob.address)


def edit(path: Path, sql: str, *params: object) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute(sql, params).rowcount == 1


def edit_json(path: Path, table: str, column: str, where: str, change: Callable[[dict], object]) -> None:
    """Rewrite one JSON cell by hand; the SQL is built from this file's own literals only."""
    with closing(sqlite3.connect(path)) as conn, conn:
        (text,) = conn.execute(f"SELECT {column} FROM {table} WHERE {where}").fetchone()  # noqa: S608
        value = json.loads(text)
        change(value)
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (json.dumps(value),))  # noqa: S608


def test_a_clean_log_verifies(log: Log) -> None:
    report = verify_ledger(log.path)
    with EmbeddedLedger.open(log.path) as ledger:
        head = ledger.head()
    assert (report.height, report.head_hash) == (6, head.hash)
    assert report.state_root.startswith("sha256:")


def test_verify_never_writes_and_works_while_the_ledger_is_open(log: Log) -> None:
    before = hashlib.sha256(log.path.read_bytes()).hexdigest()
    verify_ledger(log.path)
    assert hashlib.sha256(log.path.read_bytes()).hexdigest() == before
    with EmbeddedLedger.open(log.path) as ledger:
        Wallet(Identity.generate(), ledger).register("carol")
        assert verify_ledger(log.path).height == 7 == ledger.head().height


def set_payload_amount(tx: dict) -> None:
    tx["tx"]["payload"]["amount"] = 1


def flip_signature(tx: dict) -> None:
    tx["signature"] = ("0" if tx["signature"][0] != "0" else "1") + tx["signature"][1:]


def set_event_amount(events: list) -> None:
    events[0]["attrs"]["amount"] = 999


def set_balance(account: dict) -> None:
    account["balance"] += 1


def swap_in_a_strangers_transaction(log: Log) -> None:
    """A well-formed, validly signed transaction that the contracts refuse (its sender has no account)."""
    stranger = Identity.generate()
    tx = Transaction(FaucetDrip.TYPE, FaucetDrip(5).to_payload(), stranger.address, 1, "cloister-test")
    signed = SignedTransaction.sign(stranger, tx)
    edit(log.path, "UPDATE blocks SET tx = ?, tx_hash = ? WHERE height = 4", json.dumps(signed.to_json()), signed.hash)


TAMPERS: dict[str, tuple[Callable[[Log], None], int, str]] = {
    "tx payload": (lambda lg: edit_json(lg.path, "blocks", "tx", "height = 4", set_payload_amount), 4, "tx_hash"),
    "tx signature": (lambda lg: edit_json(lg.path, "blocks", "tx", "height = 3", flip_signature), 3, "signature"),
    "tx swapped": (swap_in_a_strangers_transaction, 4, "replay"),
    "tx not a transaction": (lambda lg: edit(lg.path, "UPDATE blocks SET tx = '{}' WHERE height = 5"), 5, "tx"),
    "block time": (lambda lg: edit(lg.path, "UPDATE blocks SET time = time + 5 WHERE height = 4"), 4, "hash"),
    "time going back": (lambda lg: edit(lg.path, "UPDATE blocks SET time = 0 WHERE height = 2"), 2, "time"),
    "block events": (
        lambda lg: edit_json(lg.path, "blocks", "events", "height = 3", set_event_amount),
        3,
        "events",
    ),
    "prev_hash": (
        lambda lg: edit(lg.path, "UPDATE blocks SET prev_hash = 'sha256:' || hex(zeroblob(32)) WHERE height = 2"),
        2,
        "link",
    ),
    "state_root": (
        lambda lg: edit(lg.path, "UPDATE blocks SET state_root = prev_hash WHERE height = 5"),
        5,
        "state_root",
    ),
    "block hash": (lambda lg: edit(lg.path, "UPDATE blocks SET hash = prev_hash WHERE height = 6"), 6, "hash"),
    "tx not JSON": (lambda lg: edit(lg.path, "UPDATE blocks SET tx = '{\"tx\":' WHERE height = 2"), 2, "format"),
    "state row": (
        lambda lg: edit_json(lg.path, "state", "value", f"key = 'account/{lg.alice}'", set_balance),
        5,
        "state_table",
    ),
    "state row deleted": (
        lambda lg: edit(lg.path, "DELETE FROM state WHERE key = ?", f"account/{lg.bob}"),
        6,
        "state_table",
    ),
    "state row added": (lambda lg: edit(lg.path, "INSERT INTO state VALUES ('account/x', '{}')"), 6, "state_table"),
    "events row": (
        lambda lg: edit(lg.path, "UPDATE events SET attrs = '{\"amount\":1}' WHERE seq = 3"),
        3,
        "events_table",
    ),
    "events row deleted": (lambda lg: edit(lg.path, "DELETE FROM events WHERE seq = 4"), 4, "events_table"),
    "last block deleted": (lambda lg: edit(lg.path, "DELETE FROM blocks WHERE height = 6"), 6, "missing"),
    "middle block deleted": (lambda lg: edit(lg.path, "DELETE FROM blocks WHERE height = 3"), 3, "missing"),
    "head rewound": (
        lambda lg: edit(lg.path, "UPDATE meta SET value = json_set(value, '$.height', 4) WHERE key = 'head'"),
        5,
        "head",
    ),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_any_hand_edit_names_the_first_bad_height(log: Log, name: str) -> None:
    tamper, height, check = TAMPERS[name]
    tamper(log)
    with pytest.raises(LedgerCorrupted) as caught:
        verify_ledger(log.path)
    assert (caught.value.height, caught.value.details["check"]) == (height, check)
    assert f"height {height}" in caught.value.message
    assert "backup" in caught.value.message


def test_the_lowest_bad_height_wins(log: Log) -> None:
    edit(log.path, "UPDATE events SET attrs = '{}' WHERE seq = 5")
    edit(log.path, "UPDATE events SET attrs = '{}' WHERE seq = 2")
    edit_json(log.path, "state", "value", f"key = 'account/{log.bob}'", set_balance)
    with pytest.raises(LedgerCorrupted) as caught:
        verify_ledger(log.path)
    assert caught.value.height == 2


def test_a_missing_genesis_is_corruption_at_height_zero(log: Log) -> None:
    edit(log.path, "DELETE FROM meta WHERE key = 'genesis'")
    with pytest.raises(LedgerCorrupted) as caught:
        verify_ledger(log.path)
    assert caught.value.height == 0


def test_what_is_not_a_ledger_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no ledger"):
        verify_ledger(tmp_path / "missing.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00garbage" * 512)
    with pytest.raises(ConfigError, match="not a Cloister ledger"):
        verify_ledger(junk)

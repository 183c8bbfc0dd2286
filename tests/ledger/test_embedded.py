"""The SQLite backend itself: files, persistence across reopen, the hash chain, block time, paging bounds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.ledger.conftest import FakeClock

from cloister.crypto.identity import Identity
from cloister.errors import BadRequest, ConfigError, InsufficientFunds, LedgerError
from cloister.ledger.embedded import EmbeddedLedger, SqliteState, block_hash, next_state_root
from cloister.ledger.genesis import Genesis
from cloister.ledger.verify import verify_ledger
from cloister.ledger.wallet import Wallet


def funded(ledger: EmbeddedLedger, name: str, funds: int = 1_000, identity: Identity | None = None) -> Wallet:
    wallet = Wallet(identity or Identity.generate(), ledger)
    wallet.register(name)
    wallet.faucet(funds)
    return wallet


def test_create_refuses_an_existing_file(tmp_path: Path, genesis: Genesis) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already exists"):
        EmbeddedLedger.create(path, genesis)
    assert path.read_bytes() == b"precious"


def test_open_refuses_what_is_not_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no ledger at"):
        EmbeddedLedger.open(tmp_path / "missing.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="not a Cloister ledger"):
        EmbeddedLedger.open(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    with pytest.raises(ConfigError, match="not a Cloister ledger"):
        EmbeddedLedger.open(other)


def test_a_new_ledger_is_at_genesis(embedded: EmbeddedLedger, genesis: Genesis) -> None:
    head = embedded.head()
    assert (head.height, head.hash, head.time) == (0, genesis.hash, genesis.time)
    assert embedded.chain_id == genesis.chain_id
    assert embedded.events().events == []
    assert embedded.blocks() == []
    with sqlite3.connect(embedded.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_restart_keeps_head_state_and_events(tmp_path: Path, genesis: Genesis, clock: FakeClock) -> None:
    path = tmp_path / "ledger.db"
    with EmbeddedLedger.create(path, genesis, clock=clock) as ledger:
        alice_id = Identity.generate()
        alice, bob = funded(ledger, "alice", identity=alice_id), funded(ledger, "bob")
        clock.advance(30)
        alice.transfer(bob.address, 250)
        head, events = ledger.head(), ledger.events(limit=1000)
        accounts = [ledger.account(alice.address), ledger.account(bob.address)]

    assert not path.with_name(path.name + "-wal").exists(), "closing checkpoints the WAL into the file"
    report = verify_ledger(path)
    assert (report.height, report.head_hash) == (head.height, head.hash)
    with EmbeddedLedger.open(path, clock=clock) as ledger:
        assert ledger.head() == head
        assert ledger.events(limit=1000) == events
        assert [ledger.account(alice.address), ledger.account(bob.address)] == accounts
        # A fresh wallet reads its nonce from the reopened ledger and the chain continues.
        again = Wallet(alice_id, ledger)
        receipt = again.transfer(bob.address, 1)
        assert receipt.height == head.height + 1
        assert ledger.blocks(start=receipt.height)[0]["prev_hash"] == head.hash
    assert verify_ledger(path).height == head.height + 1


def test_blocks_form_a_hash_chain(embedded: EmbeddedLedger, genesis: Genesis) -> None:
    alice = funded(embedded, "alice")
    alice.transfer(alice.address, 5)
    blocks = embedded.blocks(start=0, limit=10)
    assert [b["height"] for b in blocks] == [1, 2, 3]
    prev_hash = genesis.hash
    for block in blocks:
        assert block["prev_hash"] == prev_hash
        assert block["hash"] == block_hash(block)
        prev_hash = block["hash"]
    assert embedded.head().hash == prev_hash
    assert len({b["state_root"] for b in blocks} | {genesis.hash}) == 4
    assert embedded.blocks(start=2, limit=1) == [blocks[1]]
    assert next_state_root(genesis.hash, {}) != next_state_root(genesis.hash, {"k": {}})


def test_block_time_follows_the_clock_but_never_goes_back(embedded: EmbeddedLedger, clock: FakeClock) -> None:
    alice = funded(embedded, "alice")
    clock.advance(100)
    alice.transfer(alice.address, 1)
    clock.advance(-1000)
    alice.transfer(alice.address, 1)
    times = [b["time"] for b in embedded.blocks()]
    start = times[0]
    assert times == [start, start, start + 100, start + 100]
    assert embedded.head().time == start + 100


def test_a_rejected_transaction_records_nothing(embedded: EmbeddedLedger) -> None:
    alice = funded(embedded, "alice", funds=10)
    head, events = embedded.head(), embedded.events()
    with pytest.raises(InsufficientFunds):
        alice.transfer(alice.address, 11)
    assert embedded.head() == head
    assert embedded.events() == events
    assert embedded.account(alice.address).balance == 10
    assert verify_ledger(embedded.path).height == head.height


def test_two_writers_on_one_file_extend_one_chain(embedded: EmbeddedLedger, clock: FakeClock) -> None:
    """Each submit reads the head inside its write transaction, so a second opener cannot fork the chain."""
    with EmbeddedLedger.open(embedded.path, clock=clock) as other:
        alice, bob = funded(embedded, "alice"), funded(other, "bob")
        for _ in range(3):
            alice.transfer(bob.address, 1)
            bob.transfer(alice.address, 2)
        assert other.head() == embedded.head()
        assert other.head().height == 10
    assert verify_ledger(embedded.path).height == 10


@pytest.mark.parametrize(("after", "limit"), [(0, 0), (0, 1001), (-1, 10), (True, 10), (0, "5"), (1 << 63, 1)])
def test_paging_bounds_are_refused(embedded: EmbeddedLedger, after: object, limit: object) -> None:
    with pytest.raises(BadRequest):
        embedded.events(after=after, limit=limit)  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        embedded.blocks(after, limit)  # type: ignore[arg-type]


def test_a_closed_ledger_says_so(embedded: EmbeddedLedger) -> None:
    embedded.close()
    embedded.close()
    with pytest.raises(LedgerError, match="closed"):
        embedded.head()
    with pytest.raises(LedgerError, match="closed"):
        embedded.account("cl" + "0" * 40)


def test_state_scan_is_an_exact_prefix_range(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    keys = ["a", "a/2", "a/1", "a0", "a.", "b/1", "a/1/x", "a/\u00e9"]
    conn.executemany("INSERT INTO state VALUES (?, ?)", [(k, f'{{"k":"{k}"}}') for k in keys])
    store = SqliteState(conn)
    assert [k for k, _ in store.scan("a/")] == ["a/1", "a/1/x", "a/2", "a/\u00e9"]
    assert [k for k, _ in store.scan("")] == sorted(keys)
    assert store.get("a0") == {"k": "a0"}
    assert store.get("zz") is None
    conn.close()

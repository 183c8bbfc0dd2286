"""``cloister ledger verify``: replay an embedded ledger's log from genesis; compare it with what it stores.

The file is opened read-only inside one read transaction, so verifying a ledger that a server is appending to
checks a consistent prefix and never changes the file. The first disagreement raises
:class:`LedgerCorrupted` naming the first bad height and the check that failed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import parse_digest
from cloister.errors import CloisterError, ConfigError, LedgerCorrupted, MalformedInput, SignatureRejected
from cloister.ledger.contracts import BlockContext, execute
from cloister.ledger.embedded import (
    block_from_row,
    block_hash,
    connect,
    events_json,
    next_state_root,
    read_genesis,
    read_head,
    select_blocks,
)
from cloister.ledger.envelope import SignedTransaction
from cloister.ledger.genesis import Genesis
from cloister.ledger.protocol import Head
from cloister.ledger.state import MemoryState

_ADVICE = "restore the file from a backup or a peer's export; do not serve it"


@dataclass(frozen=True)
class VerifyReport:
    """What a successful replay proved: the head it reached and the state root it recomputed."""

    height: int
    head_hash: str
    state_root: str


def verify_ledger(path: Path) -> VerifyReport:
    """Replay the whole log; return the verified head or raise :class:`LedgerCorrupted`."""
    if not path.is_file():
        raise ConfigError(f"no ledger at {path}; check the path")
    conn = connect(path, "ro")
    try:
        conn.execute("BEGIN")
        try:
            genesis = read_genesis(conn)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path} is not a Cloister ledger database ({exc}); check the path") from None
        except MalformedInput as exc:
            raise _corrupted(0, "genesis", f"the genesis record is unreadable: {exc.message}") from None
        return _Replay(conn, genesis).run()
    finally:
        conn.close()


def _corrupted(height: int, check: str, what: str) -> LedgerCorrupted:
    return LedgerCorrupted(f"ledger corrupted at height {height}: {what}; {_ADVICE}", height=height, check=check)


class _Replay:
    """Replays blocks onto a :class:`MemoryState`, remembering which block last wrote each key."""

    def __init__(self, conn: sqlite3.Connection, genesis: Genesis) -> None:
        self.conn = conn
        self.genesis = genesis
        self.state = MemoryState()
        self.written_at: dict[str, int] = {}
        self.events: list[tuple[int, int, str, dict[str, Any]]] = []
        self.head = Head(0, genesis.hash, genesis.time)
        self.root = genesis.hash

    def run(self) -> VerifyReport:
        for row in select_blocks(self.conn, 1, -1):
            expected = self.head.height + 1
            if row[0] != expected:
                raise _corrupted(expected, "missing", f"block {expected} is missing (the next one is {row[0]})")
            try:
                self._replay(row)
            except MalformedInput as exc:
                raise _corrupted(expected, "format", f"block {expected} is malformed: {exc.message}") from None
        self._check_head()
        self._check_tables()
        return VerifyReport(self.head.height, self.head.hash, self.root)

    def _replay(self, row: tuple[Any, ...]) -> None:
        height = int(row[0])
        block = block_from_row(row)
        if block["prev_hash"] != self.head.hash:
            raise _corrupted(height, "link", f"block {height} does not link to block {height - 1}'s hash")
        if not isinstance(block["time"], int) or block["time"] < self.head.time:
            raise _corrupted(height, "time", f"block {height}'s time is before block {height - 1}'s")
        try:
            signed = SignedTransaction.from_json(block["tx"])
        except CloisterError as exc:
            raise _corrupted(height, "tx", f"block {height}'s transaction is malformed: {exc.message}") from None
        if signed.hash != block["tx_hash"]:
            raise _corrupted(height, "tx_hash", f"block {height}'s transaction does not hash to its tx_hash")
        ctx = BlockContext(height=height, time=block["time"], randomness=parse_digest(self.head.hash))
        try:
            outcome = execute(self.state, signed, ctx, self.genesis)  # checks the signature first
        except SignatureRejected as exc:
            raise _corrupted(height, "signature", f"block {height}: {exc.message}") from None
        except CloisterError as exc:
            raise _corrupted(
                height, "replay", f"block {height}'s transaction is rejected on replay: {exc.message}"
            ) from None
        root = next_state_root(self.root, outcome.writes)
        if root != block["state_root"]:
            raise _corrupted(height, "state_root", f"block {height}'s writes do not replay to its state root")
        if canonical_json(events_json(outcome.events)) != canonical_json(block["events"]):
            raise _corrupted(height, "events", f"block {height}'s events differ from the replayed ones")
        if block_hash(block) != block["hash"]:
            raise _corrupted(height, "hash", f"block {height}'s hash does not match its contents")
        # Commit what a reader of the SQLite table sees (a JSON round trip), as the embedded ledger does.
        self.state.commit(loads(canonical_json(outcome.writes)))
        self.written_at.update(dict.fromkeys(outcome.writes, height))
        seq = len(self.events)
        for i, event in enumerate(block["events"], 1):
            self.events.append((seq + i, height, event["kind"], event["attrs"]))
        self.head = Head(height, block["hash"], block["time"])
        self.root = root

    def _check_head(self) -> None:
        try:
            stored, stored_root = read_head(self.conn)
        except (MalformedInput, KeyError, TypeError, ValueError):
            raise _corrupted(self.head.height, "head", "the recorded head is unreadable") from None
        if stored.height > self.head.height:
            raise _corrupted(
                self.head.height + 1,
                "missing",
                f"the log ends at height {self.head.height} but the recorded head is {stored.height}: "
                "blocks were removed",
            )
        if stored != self.head or stored_root != self.root:
            raise _corrupted(
                min(stored.height + 1, self.head.height), "head", "the recorded head is not the last block"
            )

    def _check_tables(self) -> None:
        """The state and events tables must be exactly the replay's; report the lowest height that differs."""
        found: list[tuple[int, str, str]] = []
        stored_state = {key: value for key, value in self.conn.execute("SELECT key, value FROM state")}
        for key in set(stored_state) | set(self.state.data):
            value = self.state.data.get(key)
            if value is None or stored_state.get(key) != canonical_json(value).decode():
                height = self.written_at.get(key, self.head.height)
                found.append((height, "state_table", f"state row {key!r} differs from the replayed state"))
        stored_events = self.conn.execute("SELECT seq, height, kind, attrs FROM events ORDER BY seq").fetchall()
        for index in range(max(len(stored_events), len(self.events))):
            stored = tuple(stored_events[index]) if index < len(stored_events) else None
            replayed = self.events[index] if index < len(self.events) else None
            if replayed is None or _event_row(replayed) != stored:
                height = replayed[1] if replayed else self.head.height
                found.append((height, "events_table", f"event row {index + 1} differs from the replayed events"))
                break
        if found:
            height, check, what = min(found)
            raise _corrupted(height, check, what)


def _event_row(event: tuple[int, int, str, dict[str, Any]]) -> tuple[int, int, str, str]:
    seq, height, kind, attrs = event
    return seq, height, kind, canonical_json(attrs).decode()

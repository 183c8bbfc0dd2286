"""The gateway's own records, in one SQLite file under its folder: signed receipts and metered usage.

Usage is written in the same transaction as the receipt that proves it, so a crash loses neither or both; a
settlement *batch* is fixed (rows assigned, digest of their receipt ids computed) before its transaction is sent,
so a retry after a crash re-sends exactly the same batch instead of re-counting tokens.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS receipts (receipt_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, "
    "data BLOB NOT NULL, issued_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS usage (receipt_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, user TEXT NOT NULL, "
    "tokens INTEGER NOT NULL, batch_id INTEGER)",
    "CREATE INDEX IF NOT EXISTS usage_open ON usage (order_id, user) WHERE batch_id IS NULL",
    "CREATE TABLE IF NOT EXISTS batches (batch_id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, "
    "user TEXT NOT NULL, tokens INTEGER NOT NULL, receipts_digest TEXT NOT NULL, "
    "state TEXT NOT NULL, outcome TEXT NOT NULL DEFAULT '')",
)
PENDING, SETTLED, REFUSED = "pending", "settled", "refused"


@dataclass(frozen=True)
class Batch:
    """Usage of one user on one deployment, to be settled by one ``usage.settle`` transaction."""

    batch_id: int
    order_id: str
    user: str
    tokens: int
    receipts_digest: str


class GatewayStore:
    """Thread-safe: one connection, one lock (the gateway writes a row per answer; SQLite keeps up easily)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self._conn.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- receipts and usage ---------------------------------------------------------------------------------

    def record(self, receipt_id: str, order_id: str, data: bytes, issued_at: int, user: str, tokens: int) -> None:
        """Keep a signed receipt and the tokens it bills to ``user``, atomically."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO receipts (receipt_id, order_id, data, issued_at) VALUES (?, ?, ?, ?)",
                    (receipt_id, order_id, data, issued_at),
                )
                self._conn.execute(
                    "INSERT INTO usage (receipt_id, order_id, user, tokens) VALUES (?, ?, ?, ?)",
                    (receipt_id, order_id, user, tokens),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def receipt(self, receipt_id: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute("SELECT data FROM receipts WHERE receipt_id = ?", (receipt_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def unsettled_tokens(self, order_id: str, user: str) -> int:
        """Tokens billed to ``user`` that the ledger has not charged yet (open rows and batches in flight)."""
        with self._lock:
            open_rows = self._conn.execute(
                "SELECT COALESCE(SUM(tokens), 0) FROM usage WHERE order_id = ? AND user = ? AND batch_id IS NULL",
                (order_id, user),
            ).fetchone()[0]
            in_flight = self._conn.execute(
                "SELECT COALESCE(SUM(tokens), 0) FROM batches WHERE order_id = ? AND user = ? AND state = ?",
                (order_id, user, PENDING),
            ).fetchone()[0]
        return int(open_rows) + int(in_flight)

    # --- settlement -----------------------------------------------------------------------------------------

    def close_batches(self) -> None:
        """Group every open usage row into one pending batch per (deployment, user)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                groups = self._conn.execute(
                    "SELECT order_id, user FROM usage WHERE batch_id IS NULL GROUP BY order_id, user"
                ).fetchall()
                for order_id, user in groups:
                    rows = self._conn.execute(
                        "SELECT receipt_id, tokens FROM usage WHERE order_id = ? AND user = ? AND batch_id IS NULL "
                        "ORDER BY receipt_id",
                        (order_id, user),
                    ).fetchall()
                    receipts = [str(r[0]) for r in rows]
                    cursor = self._conn.execute(
                        "INSERT INTO batches (order_id, user, tokens, receipts_digest, state) VALUES (?, ?, ?, ?, ?)",
                        (order_id, user, sum(int(r[1]) for r in rows), receipts_digest(receipts), PENDING),
                    )
                    self._conn.executemany(
                        "UPDATE usage SET batch_id = ? WHERE receipt_id = ?",
                        [(cursor.lastrowid, receipt_id) for receipt_id in receipts],
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def pending_batches(self) -> list[Batch]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT batch_id, order_id, user, tokens, receipts_digest FROM batches WHERE state = ? "
                "ORDER BY batch_id",
                (PENDING,),
            ).fetchall()
        return [Batch(int(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4])) for r in rows]

    def finish_batch(self, batch_id: int, state: str, outcome: str) -> None:
        """Mark a batch settled (``outcome`` = tx hash) or refused by the ledger for good (``outcome`` = why)."""
        with self._lock:
            self._conn.execute(
                "UPDATE batches SET state = ?, outcome = ? WHERE batch_id = ?", (state, outcome, batch_id)
            )

    def batch_states(self) -> dict[int, tuple[str, str]]:
        """Every batch's state and outcome, for operators and tests."""
        with self._lock:
            rows = self._conn.execute("SELECT batch_id, state, outcome FROM batches").fetchall()
        return {int(r[0]): (str(r[1]), str(r[2])) for r in rows}


def receipts_digest(receipt_ids: list[str]) -> str:
    """What a ``usage.settle`` commits to: the digest of the sorted receipt ids it bills."""
    return digest_bytes(canonical_json(sorted(receipt_ids)))

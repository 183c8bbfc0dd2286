"""The embedded ledger: a hash-chained transaction log and its state in one SQLite file.

One accepted transaction is one block. The block, the state writes and the events are committed in a single
SQLite transaction in WAL mode with ``synchronous=FULL``, so a receipt is only handed out once the block is on
disk and survives ``kill -9``. ``cloister ledger verify`` (:mod:`cloister.ledger.verify`) replays the log to
check it.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import digest_bytes, parse_digest
from cloister.errors import BadRequest, ConfigError, LedgerError, MalformedInput, RecordNotFound
from cloister.ledger.contracts import BlockContext, execute
from cloister.ledger.envelope import SignedTransaction
from cloister.ledger.genesis import Genesis
from cloister.ledger.protocol import EventPage, Head, LedgerEvent, TxReceipt
from cloister.ledger.queries import StateReader
from cloister.ledger.records import (
    Account,
    Checkpoint,
    Credit,
    Dispute,
    Endpoint,
    KeyGrant,
    Machine,
    Offer,
    Order,
    Provider,
    Refusal,
    ResumeGrant,
    Timeout,
)

MAX_PAGE = 1000
"""Most events or blocks one call returns; page with the cursor for more."""

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE blocks (height INTEGER PRIMARY KEY, prev_hash TEXT NOT NULL, time INTEGER NOT NULL,"
    " tx_hash TEXT NOT NULL UNIQUE, tx TEXT NOT NULL, events TEXT NOT NULL, state_root TEXT NOT NULL,"
    " hash TEXT NOT NULL)",
    "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE events (seq INTEGER PRIMARY KEY, height INTEGER NOT NULL, kind TEXT NOT NULL, attrs TEXT NOT NULL)",
)
_MAX_INT = (1 << 63) - 1

T = TypeVar("T")


# --- the hash chain (shared with verify) --------------------------------------------------------------------


def next_state_root(prev_root: str, writes: dict[str, dict[str, Any]]) -> str:
    """``sha256(prev_root ‖ canonical_json(writes))``: commits to every write, in order of blocks."""
    return digest_bytes(parse_digest(prev_root) + canonical_json(writes))


def block_hash(block: dict[str, Any]) -> str:
    """Digest of the canonical JSON of every block field except ``hash`` itself."""
    return digest_bytes(canonical_json({k: v for k, v in block.items() if k != "hash"}))


def events_json(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The form a block stores its events in."""
    return [{"kind": kind, "attrs": attrs} for kind, attrs in events]


def block_from_row(row: tuple[Any, ...]) -> dict[str, Any]:
    """A ``blocks`` row as the JSON object that is hashed and exported (MalformedInput if unparsable)."""
    height, prev_hash, block_time, tx_hash, tx, events, state_root, hash_ = row
    return {
        "height": height,
        "prev_hash": prev_hash,
        "time": block_time,
        "tx_hash": tx_hash,
        "tx": loads(tx),
        "events": loads(events),
        "state_root": state_root,
        "hash": hash_,
    }


def select_blocks(conn: sqlite3.Connection, start: int, limit: int) -> sqlite3.Cursor:
    """Stored blocks from height ``start`` on, in order; ``limit`` -1 means all of them."""
    return conn.execute(
        "SELECT height, prev_hash, time, tx_hash, tx, events, state_root, hash FROM blocks"
        " WHERE height >= ? ORDER BY height LIMIT ?",
        (start, limit),
    )


def read_genesis(conn: sqlite3.Connection) -> Genesis:
    row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
    if row is None:
        raise MalformedInput("the meta table has no genesis")
    return Genesis.from_json(loads(row[0]))


def read_head(conn: sqlite3.Connection) -> tuple[Head, str]:
    """The head recorded with the last block, and its state root."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'head'").fetchone()
    if row is None:
        raise MalformedInput("the meta table has no head")
    head = loads(row[0])
    return Head.from_json(head), str(head["state_root"])


def _head_json(head: Head, state_root: str) -> str:
    return canonical_json({**head.to_json(), "state_root": state_root}).decode()


# --- SQLite access ------------------------------------------------------------------------------------------


class SqliteState:
    """The ``state`` table as a :class:`cloister.ledger.state.StateStore`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(loads(row[0]))

    def scan(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if prefix:
            # Keys compare as UTF-8 bytes: keys with the prefix lie in [prefix, prefix with last char + 1).
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            rows = self._conn.execute(
                "SELECT key, value FROM state WHERE key >= ? AND key < ? ORDER BY key", (prefix, upper)
            ).fetchall()
        else:
            rows = self._conn.execute("SELECT key, value FROM state ORDER BY key").fetchall()
        for key, value in rows:
            yield key, dict(loads(value))


def connect(path: Path, mode: str) -> sqlite3.Connection:
    """Open ``path`` in SQLite URI ``mode`` (``ro``, ``rw``, ``rwc``), autocommit: we issue BEGIN."""
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=30,
        )
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the ledger database {path}: {exc}; check the path and permissions") from None
    return conn


def page_bounds(start: int, limit: int) -> None:
    """Refuse cursors and page sizes a caller could not have meant."""
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= _MAX_INT:
        raise BadRequest(f"the cursor must be an integer from 0 to {_MAX_INT}, got {start!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")


class EmbeddedLedger:
    """The ``Ledger`` of one SQLite file: submits are serialized, reads run concurrently."""

    def __init__(self, path: Path, writer: sqlite3.Connection, genesis: Genesis, clock: Callable[[], float]) -> None:
        self.path = path
        self.genesis = genesis
        self._clock = clock
        self._writer = writer
        self._write_lock = threading.Lock()
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    @classmethod
    def create(cls, path: Path, genesis: Genesis, *, clock: Callable[[], float] = time.time) -> EmbeddedLedger:
        """Start a new chain in a new file; an existing file is never overwritten."""
        if path.exists():
            raise ConfigError(f"{path} already exists; open it instead, or pick a new path for a new chain")
        conn = connect(path, "rwc")
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("genesis", canonical_json(genesis.to_json()).decode()),
                    ("head", _head_json(Head(0, genesis.hash, genesis.time), genesis.hash)),
                ],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        return cls.open(path, clock=clock)

    @classmethod
    def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> EmbeddedLedger:
        """Open an existing ledger file (created by :meth:`create`)."""
        if not path.is_file():
            raise ConfigError(f"no ledger at {path}; create one with `cloister devnet up` or EmbeddedLedger.create")
        conn = connect(path, "rw")
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            genesis = read_genesis(conn)
            read_head(conn)
        except (sqlite3.Error, MalformedInput) as exc:
            conn.close()
            raise ConfigError(f"{path} is not a Cloister ledger database ({exc}); check the path") from None
        return cls(path, conn, genesis, clock)

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    # --- writes --------------------------------------------------------------------------------------------

    def submit(self, signed: SignedTransaction) -> TxReceipt:
        """Execute ``signed`` as the next block and commit it durably, or raise and record nothing."""
        with self._write_lock:
            self._check_open()
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                receipt = self._append(conn, signed)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may already have rolled back (I/O error, disk full)
                    conn.execute("ROLLBACK")
                raise
            return receipt

    def _append(self, conn: sqlite3.Connection, signed: SignedTransaction) -> TxReceipt:
        head, root = read_head(conn)
        height = head.height + 1
        ctx = BlockContext(height=height, time=max(head.time, int(self._clock())), randomness=parse_digest(head.hash))
        outcome = execute(SqliteState(conn), signed, ctx, self.genesis)
        tx_hash, tx_json = signed.hash, signed.to_json()
        events_text = canonical_json(events_json(outcome.events)).decode()
        block: dict[str, Any] = {
            "height": height,
            "prev_hash": head.hash,
            "time": ctx.time,
            "tx_hash": tx_hash,
            "tx": tx_json,
            "events": loads(events_text),
            "state_root": next_state_root(root, outcome.writes),
        }
        block["hash"] = block_hash(block)
        conn.execute(
            "INSERT INTO blocks (height, prev_hash, time, tx_hash, tx, events, state_root, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                height,
                head.hash,
                ctx.time,
                tx_hash,
                canonical_json(tx_json).decode(),
                events_text,
                block["state_root"],
                block["hash"],
            ),
        )
        conn.executemany(
            "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(key, canonical_json(value).decode()) for key, value in outcome.writes.items()],
        )
        (last_seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        events = [
            LedgerEvent(last_seq + i, height, event["kind"], event["attrs"])
            for i, event in enumerate(block["events"], 1)
        ]
        conn.executemany(
            "INSERT INTO events (seq, height, kind, attrs) VALUES (?, ?, ?, ?)",
            [(e.seq, e.height, e.kind, canonical_json(e.attrs).decode()) for e in events],
        )
        new_head = Head(height, block["hash"], ctx.time)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head'", (_head_json(new_head, block["state_root"]),))
        return TxReceipt(tx_hash, height, events)

    # --- reads ---------------------------------------------------------------------------------------------

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A pooled read connection inside one read transaction, so a multi-query read sees one state."""
        self._check_open()
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = connect(self.path, "ro")
            with self._readers_lock:
                self._readers.append(conn)
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")
            self._idle.put(conn)

    def _read(self, query: Callable[[StateReader], T]) -> T:
        with self._snapshot() as conn:
            return query(StateReader(SqliteState(conn)))

    def head(self) -> Head:
        with self._snapshot() as conn:
            return read_head(conn)[0]

    def block_hash(self, height: int) -> str:
        """The hash of the block at ``height``; height 0 is the genesis (its hash seeds block 1)."""
        if isinstance(height, bool) or not isinstance(height, int) or not 0 <= height <= _MAX_INT:
            raise BadRequest(f"a block height is an integer from 0 to {_MAX_INT}, got {height!r:.40}")
        if height == 0:
            return self.genesis.hash
        with self._snapshot() as conn:
            row = conn.execute("SELECT hash FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise RecordNotFound(
                f"no block at height {height} yet; the head is at {self.head().height}", key=f"block/{height}"
            )
        return str(row[0])

    def events(self, *, after: int = 0, limit: int = 100) -> EventPage:
        """Events with ``seq > after`` in order; the page's cursor is the last seq returned."""
        page_bounds(after, limit)
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT seq, height, kind, attrs FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        events = [LedgerEvent(seq, height, kind, dict(loads(attrs))) for seq, height, kind, attrs in rows]
        return EventPage(events, events[-1].seq if events else after)

    def blocks(self, start: int = 1, limit: int = 100) -> list[dict[str, Any]]:
        """Blocks from height ``start`` on, as exported JSON (height 0 is the genesis, not a stored block)."""
        page_bounds(start, limit)
        with self._snapshot() as conn:
            rows = select_blocks(conn, start, limit).fetchall()
        return [block_from_row(row) for row in rows]

    def account(self, address: str) -> Account:
        return self._read(lambda r: r.account(address))

    def provider(self, address: str) -> Provider:
        return self._read(lambda r: r.provider(address))

    def machine(self, machine_id: str) -> Machine:
        return self._read(lambda r: r.machine(machine_id))

    def machines(self, *, provider: str | None = None) -> list[Machine]:
        return self._read(lambda r: r.machines(provider=provider))

    def offer(self, offer_id: str) -> Offer:
        return self._read(lambda r: r.offer(offer_id))

    def offers(
        self,
        *,
        kind: str | None = None,
        owner: str | None = None,
        content_digest: str | None = None,
        include_retired: bool = False,
    ) -> list[Offer]:
        return self._read(
            lambda r: r.offers(kind=kind, owner=owner, content_digest=content_digest, include_retired=include_retired)
        )

    def order(self, order_id: str) -> Order:
        return self._read(lambda r: r.order(order_id))

    def orders(
        self, *, owner: str | None = None, machine_id: str | None = None, state: str | None = None
    ) -> list[Order]:
        return self._read(lambda r: r.orders(owner=owner, machine_id=machine_id, state=state))

    def grants(self, order_id: str) -> list[KeyGrant]:
        return self._read(lambda r: r.grants(order_id))

    def refusals(self, order_id: str) -> list[Refusal]:
        return self._read(lambda r: r.refusals(order_id))

    def checkpoints(self, order_id: str) -> list[Checkpoint]:
        return self._read(lambda r: r.checkpoints(order_id))

    def resume_grants(self, order_id: str) -> list[ResumeGrant]:
        return self._read(lambda r: r.resume_grants(order_id))

    def endpoints(self, order_id: str) -> list[Endpoint]:
        return self._read(lambda r: r.endpoints(order_id))

    def credit(self, order_id: str, user: str) -> Credit:
        return self._read(lambda r: r.credit(order_id, user))

    def disputes(self, order_id: str) -> list[Dispute]:
        return self._read(lambda r: r.disputes(order_id))

    def timeouts(self, order_id: str) -> list[Timeout]:
        return self._read(lambda r: r.timeouts(order_id))

    # --- lifetime ------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError(f"the ledger at {self.path} is closed; open it again with EmbeddedLedger.open")

    def close(self) -> None:
        """Wait for an in-flight submit, then close every connection; closing twice is harmless."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                for conn in self._readers:
                    conn.close()
                self._readers.clear()
            # Last, so that the writer is the last connection: it checkpoints the WAL into the file and removes it.
            self._writer.close()

    def __enter__(self) -> EmbeddedLedger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

"""Embedded ledger throughput: signed transfers per second in-process and over HTTP, and the cost of verify.

Transfers are signed beforehand (signing is the client's cost), so the clock runs over ``submit`` only. The
baseline is the least a durable, verified log must do per transaction: check the Ed25519 signature and commit
the transaction's bytes as one row in SQLite (WAL, ``synchronous=FULL``). The ratios say what the contracts,
the hash chain, state and events cost on top, then what HTTP adds, then what a full replay costs per block.

    .venv/bin/python bench/ledger.py [--txs 2000] [--http-txs 1000] [--threads 4]
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cloister.crypto.canonical import canonical_json
from cloister.crypto.identity import Identity
from cloister.errors import ServiceUnavailable
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.envelope import SignedTransaction, Transaction
from cloister.ledger.genesis import ContractParams, Genesis
from cloister.ledger.http import HttpLedger
from cloister.ledger.protocol import Ledger
from cloister.ledger.transactions import Transfer
from cloister.ledger.verify import verify_ledger
from cloister.ledger.wallet import Wallet

CHAIN = "cloister-bench"


class Run:
    """Latencies of one timed run, in seconds."""

    def __init__(self, latencies: list[float], wall: float) -> None:
        self.latencies, self.wall = latencies, wall

    @property
    def tx_per_s(self) -> float:
        return len(self.latencies) / self.wall

    def percentile(self, p: int) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000


def funded_senders(ledger: Ledger, count: int) -> list[Identity]:
    identities = [Identity.generate() for _ in range(count)]
    for identity in identities:
        wallet = Wallet(identity, ledger)
        wallet.register("bench")
        wallet.faucet(10**9)
    return identities


def presigned(senders: Sequence[Identity], per_sender: int, to: str) -> list[list[SignedTransaction]]:
    """Each sender's transfers with nonces 3, 4, … (1 and 2 were register and faucet)."""
    payload = Transfer(to, 1).to_payload()
    return [
        [
            SignedTransaction.sign(identity, Transaction(Transfer.TYPE, payload, identity.address, nonce, CHAIN))
            for nonce in range(3, 3 + per_sender)
        ]
        for identity in senders
    ]


def timed(submit: Callable[[SignedTransaction], object], batches: list[list[SignedTransaction]]) -> Run:
    """Submit each batch from its own thread (in order within a batch); time every submit."""
    latencies: list[list[float]] = [[] for _ in batches]

    def worker(index: int) -> None:
        for signed in batches[index]:
            start = time.perf_counter()
            submit(signed)
            latencies[index].append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(batches))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Run([x for xs in latencies for x in xs], time.perf_counter() - start)


def baseline(path: Path, batches: list[list[SignedTransaction]]) -> Run:
    """Verify the signature and durably commit the transaction's bytes: the floor of any verified log."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE log (hash TEXT PRIMARY KEY, tx TEXT NOT NULL)")
    lock = threading.Lock()

    def submit(signed: SignedTransaction) -> None:
        signed.verify()
        with lock:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO log VALUES (?, ?)", (signed.hash, canonical_json(signed.to_json()).decode()))
            conn.execute("COMMIT")

    try:
        return timed(submit, batches)
    finally:
        conn.close()


def new_ledger(path: Path) -> EmbeddedLedger:
    genesis = Genesis(CHAIN, int(time.time()), ContractParams(faucet_limit=10**12))
    return EmbeddedLedger.create(path, genesis)


def embedded_run(workdir: Path, name: str, txs: int, threads: int) -> tuple[Run, Run, Path]:
    """The floor and the embedded ledger on the same pre-signed transfers."""
    path = workdir / f"{name}.db"
    with new_ledger(path) as ledger:
        senders = funded_senders(ledger, threads)
        sink = funded_senders(ledger, 1)[0].address
        batches = presigned(senders, txs // threads, sink)
        floor = baseline(workdir / f"{name}-floor.db", batches)
        return floor, timed(ledger.submit, batches), path


def http_run(workdir: Path, txs: int, threads: int) -> tuple[Run, Path]:
    """``cloister ledger serve`` in its own process, HttpLedger clients in this one."""
    path = workdir / "http.db"
    new_ledger(path).close()
    port = _free_port()
    cli = Path(sys.executable).with_name("cloister")
    with (workdir / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [str(cli), "ledger", "serve", "--db", str(path), "--port", str(port)], stdout=log, stderr=log
        )
    try:
        with HttpLedger(f"http://127.0.0.1:{port}") as ledger:
            _wait_until_up(ledger, server)
            senders = funded_senders(ledger, threads)
            sink = funded_senders(ledger, 1)[0].address
            return timed(ledger.submit, presigned(senders, txs // threads, sink)), path
    finally:
        server.terminate()
        server.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(ledger: HttpLedger, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            raise SystemExit("the ledger server exited at start-up; see server.log")
        try:
            ledger.head()
            return
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def verify_cost(path: Path) -> tuple[int, float]:
    """Blocks replayed and seconds per block, best of three."""
    best = float("inf")
    height = 0
    for _ in range(3):
        start = time.perf_counter()
        height = verify_ledger(path).height
        best = min(best, time.perf_counter() - start)
    return height, best / height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=2000, help="transfers per in-process run")
    parser.add_argument("--http-txs", type=int, default=1000, help="transfers over HTTP")
    parser.add_argument("--threads", type=int, default=4, help="client threads for the concurrent runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cloister-bench-") as tmp:
        workdir = Path(tmp)
        rows: list[tuple[str, Run, Run]] = []
        floor1, one, _ = embedded_run(workdir, "one", args.txs, 1)
        rows.append(("embedded, 1 thread", one, floor1))
        floor_n, many, path = embedded_run(workdir, "many", args.txs, args.threads)
        rows.append((f"embedded, {args.threads} threads", many, floor_n))
        over_http, _ = http_run(workdir, args.http_txs, args.threads)
        rows.append((f"HTTP, {args.threads} threads", over_http, many))
        height, per_block = verify_cost(path)

    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    print(f"{'run':<22} {'tx/s':>8} {'p50 ms':>8} {'p99 ms':>8}  {'baseline tx/s':>13} {'ratio':>6}")
    for name, run, base in rows:
        print(
            f"{name:<22} {run.tx_per_s:>8.0f} {run.percentile(50):>8.2f} {run.percentile(99):>8.2f}"
            f"  {base.tx_per_s:>13.0f} {run.tx_per_s / base.tx_per_s:>6.2f}"
        )
    print("baseline: signature check + one durable SQLite row per tx (for HTTP: the embedded run above)")
    submit_cost = 1 / one.tx_per_s
    print(
        f"verify_ledger: {height} blocks, {per_block * 1e6:.0f} µs per block "
        f"({per_block / submit_cost:.2f} x one in-process submit)"
    )


if __name__ == "__main__":
    main()

"""``kill -9`` of a real ledger server under load loses no acknowledged transaction and leaves a verifiable log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ledger.conftest import free_port

from cloister.crypto.identity import Identity
from cloister.errors import CloisterError, ServiceUnavailable
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import ContractParams, Genesis
from cloister.ledger.http import HttpLedger
from cloister.ledger.verify import verify_ledger
from cloister.ledger.wallet import Wallet

SERVE = "import sys; from pathlib import Path; from cloister.ledger.server import serve; " + (
    "serve(Path(sys.argv[1]), port=int(sys.argv[2]), log_level='warning')"
)
CLIENTS = 3
ACKS_BEFORE_KILL = 45


@contextmanager
def ledger_server(db: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], HttpLedger]]:
    """``serve`` in its own process on 127.0.0.1, killed (hard) on the way out if it is still running."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVE, str(db), str(port)], stdout=out, stderr=out)
    client = HttpLedger(f"http://127.0.0.1:{port}", timeout=10)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the server exited early: {log.read_text()}"
            try:
                client.head()
                break
            except ServiceUnavailable:
                assert time.monotonic() < deadline, "the server did not answer within 30 s"
                time.sleep(0.05)
        yield proc, client
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def stored_tx_hashes(ledger: HttpLedger) -> set[str]:
    hashes: set[str] = set()
    start = 1
    while blocks := ledger.blocks(start=start, limit=1000):
        hashes.update(block["tx_hash"] for block in blocks)
        start = blocks[-1]["height"] + 1
    return hashes


def test_kill_9_under_load_keeps_every_acknowledged_transaction(tmp_path: Path) -> None:
    db, log = tmp_path / "ledger.db", tmp_path / "server.log"
    genesis = Genesis("cloister-crash", int(time.time()) - 60, ContractParams(faucet_limit=10**12))
    EmbeddedLedger.create(db, genesis).close()
    identities = [Identity.generate() for _ in range(CLIENTS)]
    sink = Identity.generate()
    acked: list[list[str]] = [[] for _ in identities]
    enough = threading.Event()

    with ledger_server(db, log) as (proc, ledger):
        Wallet(sink, ledger).register("sink")
        for identity in identities:
            wallet = Wallet(identity, ledger)
            wallet.register("client")
            wallet.faucet(10_000)

        def submit_until_the_server_dies(index: int) -> None:
            wallet = Wallet(identities[index], ledger)
            try:
                while True:
                    acked[index].append(wallet.transfer(sink.address, 1).tx_hash)
                    if sum(map(len, acked)) >= ACKS_BEFORE_KILL:
                        enough.set()
            except CloisterError:
                return  # the server died under us: what was acknowledged is checked below

        threads = [threading.Thread(target=submit_until_the_server_dies, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            assert enough.wait(timeout=60), "the clients did not get enough receipts"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            for thread in threads:
                thread.join(timeout=60)
        assert proc.returncode == -signal.SIGKILL

    with ledger_server(db, log) as (proc, ledger):
        stored = stored_tx_hashes(ledger)
        for identity, mine in zip(identities, acked, strict=True):
            assert set(mine) <= stored
            # Each client had at most one transaction in flight when the server died.
            assert ledger.account(identity.address).nonce - 2 in (len(mine), len(mine) + 1)
            Wallet(identity, ledger).transfer(sink.address, 1)
        head = ledger.head()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    # A graceful stop closed the ledger: the WAL was checkpointed into the file and removed.
    assert not db.with_name(db.name + "-wal").exists()

    report = verify_ledger(db)
    assert (report.height, report.head_hash) == (head.height, head.hash)

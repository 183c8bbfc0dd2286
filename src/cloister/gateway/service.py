"""The gateway as one object: its identity and ledger, its records, and the loops that keep it honest and paid.

Loops (started by the app's lifespan): every ``health_interval`` it re-reads its deployments from the ledger,
checks each replica's ``/health`` and asks the contract to replace machines whose heartbeat went stale; every
``settle_every`` seconds (and on shutdown) it settles metered usage on the ledger. Ledger calls block, so they
run in worker threads; nothing the user waits for is slowed by a slash or a settlement.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyio import to_thread

from cloister.attest.checks import Checklist
from cloister.consensus.receipt import (
    DISPUTE_ID_PREFIX,
    ReceiptVerifyOptions,
    ReplicaRef,
    SignedReceipt,
    verify_receipt,
)
from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity
from cloister.errors import CloisterError, MalformedInput, RecordExists, RecordNotFound, ServiceUnavailable
from cloister.gateway.auth import KeyChecker
from cloister.gateway.deployments import Directory
from cloister.gateway.metering import Meter
from cloister.gateway.orchestrator import Orchestrator
from cloister.gateway.store import REFUSED, SETTLED, GatewayStore
from cloister.gateway.upstream import Answer, ReplicaFailure, Upstream
from cloister.ledger.protocol import Ledger
from cloister.ledger.transactions import OpenDispute, Payload, ReassignOrder, ReportTimeout, SettleUsage
from cloister.ledger.wallet import Wallet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    folder: Path
    """Where the gateway keeps its SQLite file of receipts and usage."""
    commit_timeout: float = 60.0
    """Seconds a replica has to commit to a request before it is reported and replaced."""
    health_interval: float = 5.0
    settle_every: float = 60.0
    stale_after: int = 120
    """Seconds of ledger time without a heartbeat before the gateway asks the contract to replace a machine."""
    max_body_bytes: int = 1 << 20
    max_sealed_bytes: int = 6 << 20
    health_timeout: float = 3.0


class Gateway:
    """Everything one gateway holds; the HTTP app (:mod:`cloister.gateway.app`) is a thin layer over it."""

    def __init__(self, identity: Identity, ledger: Ledger, config: GatewayConfig) -> None:
        self.identity = identity
        self.ledger = ledger
        self.config = config
        self.wallet = Wallet(identity, ledger)
        self.store = GatewayStore(config.folder / "gateway.db")
        self.directory = Directory(ledger, identity.address)
        self.keys = KeyChecker(identity.address, ledger.account)
        self.meter = Meter(self.store, lambda order_id, user: ledger.credit(order_id, user).balance)
        self.upstream = Upstream()
        self.orchestrator = Orchestrator(self.upstream, self.directory, self, config.commit_timeout)
        self._background: set[asyncio.Task[None]] = set()
        self._reassigned: set[tuple[str, str, int]] = set()
        self._settling = threading.Lock()

    @property
    def address(self) -> str:
        return self.identity.address

    # --- the ledger, from the event loop --------------------------------------------------------------------

    async def send(self, payload: Payload) -> list[tuple[str, dict[str, object]]]:
        """Submit a transaction from a worker thread; the events it emitted."""
        receipt = await to_thread.run_sync(self.wallet.send, payload)
        return [(event.kind, event.attrs) for event in receipt.events]

    def _later(self, what: str, payload: Payload) -> None:
        """Send ``payload`` in the background; a refusal is logged, never raised at the user."""

        async def send() -> None:
            try:
                await self.send(payload)
                log.info("%s sent", what)
            except RecordExists:
                log.info("%s was already recorded", what)
            except CloisterError as exc:
                log.warning("%s refused: %s", what, exc.message)

        task = asyncio.get_running_loop().create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- Reporter (what the orchestrator tells the ledger) --------------------------------------------------

    def timeout(self, order_id: str, machine_id: str, request_digest: str) -> None:
        self._later(f"timeout of {machine_id} on {order_id}", ReportTimeout(order_id, machine_id, request_digest))

    async def dispute(self, order_id: str, request_digest: str, answers: Sequence[Answer]) -> str | None:
        commitments = tuple(answer.signed.to_bytes() for answer in answers)
        try:
            events = await self.send(OpenDispute(order_id, request_digest, commitments))
        except RecordExists:
            disputes = await to_thread.run_sync(self.ledger.disputes, order_id)
            return next((d.dispute_id for d in disputes if d.request_digest == request_digest), None)
        except CloisterError as exc:
            log.error("dispute on %s for %s not recorded: %s", order_id, request_digest, exc.message)
            return None
        for kind, attrs in events:
            found = attrs.get("dispute_id")
            if kind == "dispute.opened" and isinstance(found, str) and found.startswith(DISPUTE_ID_PREFIX):
                return found
        return None

    # --- loops ----------------------------------------------------------------------------------------------

    async def maintain(self) -> None:
        """One round: re-read deployments, check replica health, ask for replacements of stale machines."""
        try:
            await to_thread.run_sync(self.directory.refresh)
        except CloisterError as exc:
            log.warning("could not refresh deployments from the ledger: %s", exc.message)
            return
        await self.check_health()
        await self.reassign_stale()

    async def check_health(self) -> None:
        async def check(machine_id: str, url: str) -> None:
            replica = self.directory.replica(machine_id)
            if replica is None or replica.url != url:
                return
            try:
                await self.upstream.health(replica, self.config.health_timeout)
            except ReplicaFailure:
                self.directory.mark(machine_id, up=False)
            else:
                self.directory.mark(machine_id, up=True)

        replicas = {(r.machine_id, r.url) for d in self.directory.deployments() for r in d.replicas}
        await asyncio.gather(*(check(machine_id, url) for machine_id, url in replicas))

    async def reassign_stale(self) -> None:
        """Ask the contract to replace assigned machines silent for longer than ``stale_after`` (once each)."""
        try:
            now = (await to_thread.run_sync(self.ledger.head)).time
        except CloisterError:
            return
        for deployment in self.directory.deployments():
            for machine_id in deployment.machines:
                beat = self.directory.heartbeats.get(machine_id)
                if beat is None or now - beat.last_heartbeat <= self.config.stale_after:
                    continue
                key = (deployment.order_id, machine_id, beat.last_heartbeat)
                if key not in self._reassigned:
                    self._reassigned.add(key)
                    self._later(
                        f"replacement of stale {machine_id} on {deployment.order_id}",
                        ReassignOrder(deployment.order_id, machine_id),
                    )

    async def settle(self) -> None:
        """Settle every unsettled batch of usage, in a worker thread (see :meth:`settle_pending`)."""
        await to_thread.run_sync(self.settle_pending)

    def settle_pending(self) -> None:
        """Send ``usage.settle`` for every batch not settled yet; one settlement at a time, so no batch is sent
        twice. A ledger that cannot be reached is tried again next round; a refusal is final (and logged)."""
        with self._settling:
            self.store.close_batches()
            for batch in self.store.pending_batches():
                payload = SettleUsage(batch.order_id, batch.user, batch.tokens, batch.receipts_digest)
                try:
                    receipt = self.wallet.send(payload)
                except ServiceUnavailable as exc:
                    log.warning("settlement postponed, the ledger is unreachable: %s", exc.message)
                    return
                except CloisterError as exc:
                    log.error("the ledger refused settlement batch %d: %s", batch.batch_id, exc.message)
                    self.store.finish_batch(batch.batch_id, REFUSED, exc.message)
                    continue
                self.store.finish_batch(batch.batch_id, SETTLED, receipt.tx_hash)

    async def run_loops(self) -> None:
        """Maintenance and settlement until cancelled; a last settlement when stopped."""

        async def every(seconds: float, work: Callable[[], Awaitable[None]]) -> None:
            while True:
                try:
                    await work()
                except Exception:
                    log.exception("gateway round %s failed", work.__name__)
                await asyncio.sleep(seconds)

        try:
            await asyncio.gather(
                every(self.config.health_interval, self.maintain), every(self.config.settle_every, self.settle)
            )
        finally:
            await asyncio.shield(self._final_settlement())

    async def _final_settlement(self) -> None:
        try:
            await self.settle()
        except Exception:
            log.exception("final settlement failed; the usage stays recorded and is settled at the next start")

    async def aclose(self) -> None:
        for task in list(self._background):
            await asyncio.wait({task}, timeout=10)
        await self.upstream.aclose()
        self.store.close()

    # --- receipts -------------------------------------------------------------------------------------------

    def verify_stored(self, data: bytes) -> dict[str, Any]:
        """Check a receipt against this gateway's key and the ledger (replica keys, TCB ids, head hash).

        A convenience for the web chat; the receipt's real value is that anyone can run the same checks offline.
        """
        checklist = Checklist()
        try:
            verify_receipt(data, self._trusted(data), checklist=checklist)
        except CloisterError as exc:
            return {"ok": False, "error": exc.message, "checks": checklist.to_json()}
        return {"ok": True, "checks": checklist.to_json()}

    def _trusted(self, data: bytes) -> ReceiptVerifyOptions:
        pinned = self.identity.public.signing_key
        try:
            receipt = SignedReceipt.parse(data).receipt
        except MalformedInput:
            return ReceiptVerifyOptions(gateway_key=pinned)  # the format check fails, and says why
        replicas = {}
        for ref in receipt.replicas:
            try:
                machine = self.ledger.machine(ref.machine_id)
            except RecordNotFound:
                continue  # the replicas check fails: the receipt names a machine the ledger does not know
            replicas[ref.machine_id] = ReplicaRef(
                ref.machine_id, machine.loader_signing_key, digest_bytes(machine.tcb_evidence)
            )
        height = receipt.selection.head_height
        return ReceiptVerifyOptions(
            gateway_key=pinned, replicas=replicas, head_hashes={height: self.ledger.block_hash(height)}
        )

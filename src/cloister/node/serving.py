"""The node's side of deployments: start a replica once every key is granted, keep it up, stop it when done.

For each ``inference`` order assigned to the machine (ready or running) whose content keys are all granted to
it, the host has the trusted loader prepare the inputs, starts the replica (engine + replica server,
:mod:`cloister.runtime.serving`) and registers its endpoint with ``deployment.endpoint``, which carries the
deployment key signed by the attested loader key. A replica whose order stopped, failed or moved to another
machine is stopped and its workspace wiped; one that died is started again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from cloister.crypto.identity import Identity
from cloister.errors import CloisterError
from cloister.ledger.protocol import Ledger
from cloister.ledger.records import INFERENCE, READY, RUNNING, Order
from cloister.ledger.transactions import RegisterEndpoint
from cloister.ledger.wallet import Wallet
from cloister.runtime.loader import TrustedLoader
from cloister.runtime.serving import Fault, ReplicaHandle, start_replica
from cloister.storage import BlobStore

log = logging.getLogger("cloister.node")
SERVING_STATES = (READY, RUNNING)


@dataclass
class ReplicaHost:
    """The replicas one machine serves, by deployment (order) id."""

    ledger: Ledger
    store: BlobStore
    wallet: Wallet
    loader_identity: Identity
    machine_id: str
    tcb_id: str
    folder: Path
    threads: int | None = None
    port: int = 0
    fault: Fault = "none"
    ready_timeout: float = 600.0
    replicas: dict[str, ReplicaHandle] = field(default_factory=dict)

    def _deployments(self) -> list[Order]:
        found = []
        for state in SERVING_STATES:
            found += [o for o in self.ledger.orders(machine_id=self.machine_id, state=state) if o.kind == INFERENCE]
        return found

    def _granted(self, order: Order) -> bool:
        mine = {g.offer_id for g in self.ledger.grants(order.order_id) if g.machine_id == self.machine_id}
        return set(order.content_offers) <= mine

    def sync(self) -> list[str]:
        """Start what should run, restart what died, stop what should not run; returns the started order ids."""
        wanted = {order.order_id: order for order in self._deployments()}
        for order_id in [o for o in self.replicas if o not in wanted]:
            self._stop(order_id, "the deployment ended or moved to another machine")
        started = []
        for order_id, order in wanted.items():
            handle = self.replicas.get(order_id)
            if handle is not None and handle.running():
                continue
            if handle is not None:
                self._stop(order_id, "the replica stopped unexpectedly; starting it again")
            if not self._granted(order):
                continue
            try:
                self._start(order)
            except CloisterError as exc:
                log.warning("deployment %s: replica not started: %s", order_id, exc.message)
                continue
            started.append(order_id)
        return started

    def _start(self, order: Order) -> None:
        loader = TrustedLoader(
            self.loader_identity, self.machine_id, self.tcb_id, self.store, self.folder / "serve", threads=self.threads
        )
        offers = {offer_id: self.ledger.offer(offer_id) for offer_id in order.content_offers}
        prepared = loader.prepare(order, offers, self.ledger.grants(order.order_id), self.ledger.account(order.owner))
        try:
            handle = start_replica(
                loader,
                prepared,
                port=self.port,
                ledger=self.ledger,
                fault=self.fault,
                ready_timeout=self.ready_timeout,
            )
        except BaseException:
            prepared.workspace.wipe(now=prepared.started_at)
            raise
        try:
            self.wallet.send(
                RegisterEndpoint(
                    order.order_id, self.machine_id, handle.url, handle.deployment_key, handle.key_signature
                )
            )
        except BaseException:
            handle.stop()
            raise
        self.replicas[order.order_id] = handle
        log.info("deployment %s: replica serving at %s", order.order_id, handle.url)

    def _stop(self, order_id: str, why: str) -> None:
        handle = self.replicas.pop(order_id)
        wipe = handle.stop()
        log.info("deployment %s: replica stopped (%s); workspace wiped: %s files", order_id, why, wipe.files)

    def close(self) -> None:
        """Stop every replica (the node is shutting down)."""
        for order_id in list(self.replicas):
            self._stop(order_id, "the node is shutting down")

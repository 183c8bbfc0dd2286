"""The node's side of deployments: start a replica once every key is granted, keep it up, stop it when done.

For each ``inference`` order assigned to the machine (ready or running) whose content keys are all granted to
it, the host has the trusted loader prepare the inputs, starts the replica (engine + replica server,
:mod:`cloister.runtime.serving`) and registers its endpoint with ``deployment.endpoint``, which carries the
deployment key signed by the attested loader key. A replica whose order stopped, failed or moved to another
machine is stopped and its workspace wiped.

A replica that died is replaced by a new one that takes the deployment key from a live replica's vault: the
dead one's own server first (only its engine died, most often), then the other machines' endpoints. The ledger
fixes the key with the first endpoint, so a deployment whose every replica is gone cannot serve again; the host
says so instead of starting a replica the ledger would refuse. Each replica works in its own folder under
``serve/``, so the new one can start while the old one still answers; whatever a crashed node left there
(decrypted models) is wiped at the next sync.
"""

from __future__ import annotations

import logging
import secrets
import time
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
from cloister.runtime.workspace import Workspace
from cloister.storage import BlobStore

log = logging.getLogger("cloister.node")
SERVING_STATES = (READY, RUNNING)
SERVE_DIR = "serve"


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
    fault: Fault = "none"
    ready_timeout: float = 600.0
    replicas: dict[str, ReplicaHandle] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The folder holding every replica's workspace (one sub-folder per replica started)."""
        return self.folder / SERVE_DIR

    def _deployments(self) -> list[Order]:
        found = []
        for state in SERVING_STATES:
            found += [o for o in self.ledger.orders(machine_id=self.machine_id, state=state) if o.kind == INFERENCE]
        return found

    def _granted(self, order: Order) -> bool:
        mine = {g.offer_id for g in self.ledger.grants(order.order_id) if g.machine_id == self.machine_id}
        return set(order.content_offers) <= mine

    def sync(self) -> list[str]:
        """Start what should run, replace what died, stop what should not run; returns the started order ids."""
        wanted = {order.order_id: order for order in self._deployments()}
        for order_id in [o for o in self.replicas if o not in wanted]:
            self._stop(self.replicas.pop(order_id), "the deployment ended or moved to another machine")
        self._sweep()
        started = []
        for order_id, order in wanted.items():
            old = self.replicas.pop(order_id, None)
            if old is not None and old.running():
                self.replicas[order_id] = old
                continue
            try:
                handle = self._start(order, old)
            finally:
                if old is not None:  # only now: the new replica may have taken the key from its vault
                    self._stop(old, "the replica stopped unexpectedly")
            if handle is not None:
                self.replicas[order_id] = handle
                started.append(order_id)
        return started

    def _peers(self, order: Order, old: ReplicaHandle | None) -> list[str] | None:
        """Replicas to take the deployment key from: ``[]`` for the deployment's first one, ``None`` when the
        ledger has fixed the key but no replica is left to share it."""
        endpoints = self.ledger.endpoints(order.order_id)
        others = [e.url for e in endpoints if e.removed_at is None and e.machine_id != self.machine_id]
        peers = ([old.url] if old is not None else []) + others
        return None if endpoints and not peers else peers

    def _start(self, order: Order, old: ReplicaHandle | None) -> ReplicaHandle | None:
        """The order's new replica, serving and registered on the ledger; ``None`` (logged) if it cannot run."""
        if not self._granted(order):
            return None
        peers = self._peers(order, old)
        if peers is None:
            log.warning(
                "deployment %s: every replica that held its deployment key is gone, and the ledger accepts no "
                "other key; its owner must stop it and deploy again",
                order.order_id,
            )
            return None
        try:
            handle = self._launch(order, peers)
        except CloisterError as exc:
            log.warning("deployment %s: replica not started: %s", order.order_id, exc.message)
            return None
        log.info("deployment %s: replica serving at %s", order.order_id, handle.url)
        return handle

    def _launch(self, order: Order, peers: list[str]) -> ReplicaHandle:
        root = self.root / secrets.token_hex(8)
        loader = TrustedLoader(
            self.loader_identity, self.machine_id, self.tcb_id, self.store, root, threads=self.threads
        )
        offers = {offer_id: self.ledger.offer(offer_id) for offer_id in order.content_offers}
        try:
            prepared = loader.prepare(
                order, offers, self.ledger.grants(order.order_id), self.ledger.account(order.owner)
            )
            handle = start_replica(
                loader, prepared, ledger=self.ledger, peers=peers, fault=self.fault, ready_timeout=self.ready_timeout
            )
        except BaseException:
            _discard(root)  # wipes the prepared workspace with it
            raise
        try:
            self.wallet.send(
                RegisterEndpoint(
                    order.order_id, self.machine_id, handle.url, handle.deployment_key, handle.key_signature
                )
            )
        except BaseException:
            self._stop(handle, "the ledger refused its endpoint")
            raise
        return handle

    def _stop(self, handle: ReplicaHandle, why: str) -> None:
        wipe = handle.stop()
        _discard(handle.prepared.workspace.path.parent)
        log.info(
            "deployment %s: replica stopped (%s); workspace wiped: %s files",
            handle.prepared.order.order_id,
            why,
            wipe.files,
        )

    def _sweep(self) -> None:
        """Wipe the folders no live replica uses: what a crashed run of this node left (decrypted models)."""
        if not self.root.is_dir():
            return
        live = {handle.prepared.workspace.path.parent.name for handle in self.replicas.values()}
        for leftover in self.root.iterdir():
            if leftover.name not in live:
                log.warning("wiping %s, left behind by an earlier run of this node", leftover)
                _discard(leftover)

    def close(self) -> None:
        """Stop every replica (the node is shutting down)."""
        while self.replicas:
            _, handle = self.replicas.popitem()
            self._stop(handle, "the node is shutting down")


def _discard(root: Path) -> None:
    """Wipe every workspace under ``root`` (zeroing its files), then remove ``root``."""
    if not root.exists():
        return
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            Workspace(entry).wipe(now=int(time.time()))
        else:
            entry.unlink()
    root.rmdir()

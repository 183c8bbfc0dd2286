"""The deployments a gateway serves, read from the ledger, and which of their replicas answer right now.

A deployment is an open inference order whose terms name this gateway; its replicas are its registered endpoints
that were not removed. Machine facts (attested loader key, TCB id) and offer digests never change once recorded,
so they are read once; endpoints and heartbeats are re-read at every refresh. Health is the gateway's own view:
a replica that fails a check or a request is routed around until a later check finds it serving again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from cloister.consensus.commitment import deployment_digest
from cloister.consensus.modes import ConsensusMode, parse_mode
from cloister.crypto.digest import digest_bytes
from cloister.errors import CloisterError, DeploymentNotFound
from cloister.gateway.upstream import Replica
from cloister.ledger.protocol import LedgerReader
from cloister.ledger.records import INFERENCE, OPEN_ORDER_STATES, DeploymentTerms, Machine, Order

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployment:
    """One served deployment: its terms, the digest its replicas must commit under, its registered replicas."""

    order_id: str
    owner: str
    price_per_1k_tokens: int
    default_mode: ConsensusMode | None
    deployment_digest: str
    created_at: int
    replicas: tuple[Replica, ...]
    machines: tuple[str, ...]
    """Every machine assigned to the order (some may not have registered an endpoint yet)."""


@dataclass(frozen=True)
class Heartbeat:
    machine_id: str
    last_heartbeat: int


class Directory:
    """The gateway's view of its deployments; :meth:`refresh` (blocking, ledger reads) keeps it current."""

    def __init__(self, ledger: LedgerReader, gateway: str) -> None:
        self._ledger = ledger
        self.gateway = gateway
        self._lock = threading.Lock()
        self._deployments: dict[str, Deployment] = {}
        self._down: set[str] = set()
        self._machines: dict[str, Machine] = {}
        self._digests: dict[str, str] = {}
        self.heartbeats: dict[str, Heartbeat] = {}

    # --- reads ----------------------------------------------------------------------------------------------

    def deployments(self) -> list[Deployment]:
        with self._lock:
            return sorted(self._deployments.values(), key=lambda d: d.order_id)

    def deployment(self, order_id: str) -> Deployment:
        with self._lock:
            found = self._deployments.get(order_id)
        if found is None:
            raise DeploymentNotFound(
                f"this gateway serves no deployment {order_id!r:.80}; GET /v1/models lists the ones it serves",
                param="model",
            )
        return found

    def live(self, deployment: Deployment) -> tuple[Replica, ...]:
        """The replicas not known to be down."""
        with self._lock:
            return tuple(r for r in deployment.replicas if r.machine_id not in self._down)

    def replica(self, machine_id: str) -> Replica | None:
        """A replica of any served deployment, by machine."""
        with self._lock:
            for deployment in self._deployments.values():
                for replica in deployment.replicas:
                    if replica.machine_id == machine_id:
                        return replica
        return None

    # --- health ---------------------------------------------------------------------------------------------

    def mark(self, machine_id: str, *, up: bool) -> None:
        with self._lock:
            if up:
                self._down.discard(machine_id)
            elif machine_id not in self._down:
                self._down.add(machine_id)
                log.warning("replica %s is down; routing around it", machine_id)

    # --- refresh from the ledger ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the served orders, their endpoints and their machines' heartbeats."""
        found: dict[str, Deployment] = {}
        heartbeats: dict[str, Heartbeat] = {}
        for state in OPEN_ORDER_STATES:
            for order in self._ledger.orders(state=state):
                deployment = self._read(order)
                if deployment is None:
                    continue
                found[order.order_id] = deployment
                for machine_id in order.machines:
                    machine = self._ledger.machine(machine_id)
                    heartbeats[machine_id] = Heartbeat(machine_id, machine.last_heartbeat)
        with self._lock:
            self._deployments = found
            self.heartbeats = heartbeats

    def _read(self, order: Order) -> Deployment | None:
        if order.kind != INFERENCE:
            return None
        try:
            terms = DeploymentTerms.of(order.params)
            if terms.gateway != self.gateway:
                return None
            mode = None if terms.consensus is None else parse_mode(terms.consensus)
            digest = deployment_digest(
                order.order_id,
                self._offer_digest(order.model_offer),
                [self._offer_digest(offer) for offer in order.adapter_offers],
                self._offer_digest(order.engine_offer),
            )
        except CloisterError as exc:
            log.warning("not serving order %s: %s", order.order_id, exc.message)
            return None
        replicas = tuple(
            self._replica(endpoint.machine_id, endpoint.url)
            for endpoint in self._ledger.endpoints(order.order_id)
            if endpoint.removed_at is None
        )
        return Deployment(
            order.order_id,
            order.owner,
            terms.price_per_1k_tokens,
            mode,
            digest,
            order.created_at,
            replicas,
            order.machines,
        )

    def _offer_digest(self, offer_id: str) -> str:
        digest = self._digests.get(offer_id)
        if digest is None:
            digest = str(self._ledger.offer(offer_id).content_digest)
            self._digests[offer_id] = digest
        return digest

    def _replica(self, machine_id: str, url: str) -> Replica:
        machine = self._machines.get(machine_id)
        if machine is None:
            machine = self._machines[machine_id] = self._ledger.machine(machine_id)
        return Replica(machine_id, url.rstrip("/"), machine.loader_signing_key, digest_bytes(machine.tcb_evidence))

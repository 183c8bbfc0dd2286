"""The provider node: registers an attested machine and a compute offer, heart-beats, and runs ready orders.

The execution controller polls the ledger for fine-tunes assigned to its machine in state ``ready``, sends
``order.start``, hands records and bytes to the :class:`~cloister.runtime.loader.TrustedLoader`, publishes the
signed report, manifest and sealed keys (:mod:`cloister.node.delivery`) and settles with ``order.complete``
(usage seconds, report and manifest digests, delivery URI). Any failure signs a failed report, publishes it and
sends ``order.fail`` with the reason and the delivery URI.

Fail-over (:mod:`cloister.node.resume`): each checkpoint sealed during a run gets a signed notice for the order
owner in the blob store, then is recorded with ``order.checkpoint`` (with the notice's URI) and the usage
metered so far on this machine. A reassigned order that left a checkpoint behind runs only once its owner posted
the resume grant on the ledger, and continues from that checkpoint.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cloister.crypto.identity import Identity
from cloister.errors import CloisterError, ConfigError, RecordNotFound
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.records import COMPUTE, FINETUNE, READY, Machine, MachineSpecs, Order, Pricing, Restrictions
from cloister.ledger.transactions import (
    ChallengeMachine,
    CompleteOrder,
    CreateOffer,
    FailOrder,
    Heartbeat,
    RecordCheckpoint,
    RegisterMachine,
    RegisterProvider,
    StartOrder,
)
from cloister.ledger.wallet import Wallet
from cloister.node.delivery import Delivery, OwnerCheckpoint, publish_delivery
from cloister.node.platform import TeePlatform
from cloister.node.resume import CheckpointNotice, publish_notice, resume_point
from cloister.node.serving import ReplicaHost
from cloister.runtime.checkpoints import ResumePoint, SealedCheckpoint
from cloister.runtime.loader import CheckpointCallback, LoaderResult, TrustedLoader
from cloister.runtime.metering import wall_seconds
from cloister.runtime.serving import Fault
from cloister.storage import BlobStore

log = logging.getLogger("cloister.node")
STATE_FILE = "node.json"
MAX_REASON = 4096


@dataclass(frozen=True)
class Registration:
    """The machine and compute offer this node registered, and the digest of its TCB."""

    machine_id: str
    offer_id: str
    tcb_id: str


def _event(receipt: TxReceipt, kind: str, attr: str) -> str:
    for event in receipt.events:
        if event.kind == kind and attr in event.attrs:
            return str(event.attrs[attr])
    raise RecordNotFound(f"the ledger accepted the transaction but emitted no {kind} event with {attr}")


def _reason(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, CloisterError) else f"{type(exc).__name__}: {exc}"
    return text[:MAX_REASON] or type(exc).__name__


@dataclass
class ProviderNode:
    """One machine of a provider. ``operator`` is the provider's account; ``loader`` the attested loader keys."""

    ledger: Ledger
    store: BlobStore
    operator: Identity
    loader: Identity
    platform: TeePlatform
    folder: Path
    region: str = "local"
    price_per_hour: int = 0
    specs: MachineSpecs = field(default_factory=lambda: MachineSpecs(2, 4, (), 10))
    run_timeout: float = 3600.0
    threads: int | None = None
    registration: Registration | None = None
    fault: Fault = "none"
    """Fault injection for demos and tests: how this machine's replicas misbehave (see ReplicaServer)."""
    _host: ReplicaHost | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.wallet = Wallet(self.operator, self.ledger)

    # --- registration -----------------------------------------------------------------------------------

    def register(self) -> Registration:
        """Reuse this folder's machine if the ledger still knows it with these loader keys, else register anew."""
        known = self._saved()
        if known is not None:
            self.registration = known
            return known
        try:
            self.ledger.provider(self.operator.address)
        except RecordNotFound:
            self.wallet.send(RegisterProvider(f"provider {self.operator.address[:10]}", ""))
        nonce = bytes.fromhex(_event(self.wallet.send(ChallengeMachine()), "machine.challenged", "nonce"))
        tcb = self.platform.collect(self.loader.public, nonce, self.specs.to_json())
        receipt = self.wallet.send(RegisterMachine(self.region, tcb.to_bytes()))
        machine_id = _event(receipt, "machine.registered", "machine_id")
        pricing = Pricing("per_hour", self.price_per_hour, 0) if self.price_per_hour else Pricing("free", 0, 0)
        offer = CreateOffer(
            kind=COMPUTE,
            name=f"compute {machine_id}",
            description=f"{self.specs.cpu_cores} cores, {self.specs.memory_gib} GiB in {self.region}",
            content_digest=None,
            blob_uri=None,
            size=None,
            pricing=pricing,
            restrictions=Restrictions(),
            machine_ids=(machine_id,),
        )
        offer_id = _event(self.wallet.send(offer), "offer.created", "offer_id")
        self.registration = Registration(machine_id, offer_id, tcb.digest)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.folder / STATE_FILE).write_text(json.dumps(self.registration.__dict__, indent=2))
        log.info("registered machine %s with compute offer %s", machine_id, offer_id)
        return self.registration

    def _saved(self) -> Registration | None:
        try:
            data = json.loads((self.folder / STATE_FILE).read_text())
            saved = Registration(str(data["machine_id"]), str(data["offer_id"]), str(data["tcb_id"]))
            machine = self.ledger.machine(saved.machine_id)
        except (OSError, ValueError, KeyError, TypeError, RecordNotFound):
            return None
        if not machine.active or machine.loader_signing_key != self.loader.public.signing_key:
            return None
        return saved

    @property
    def machine_id(self) -> str:
        if self.registration is None:
            raise ConfigError("the node has not registered its machine yet; call register() first")
        return self.registration.machine_id

    def machine(self) -> Machine:
        return self.ledger.machine(self.machine_id)

    # --- heartbeats -------------------------------------------------------------------------------------

    def heartbeat(self) -> None:
        self.wallet.send(Heartbeat(self.machine_id))

    @contextmanager
    def heartbeats(self, interval: float) -> Iterator[None]:
        """Heart-beat every ``interval`` seconds in a thread while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    self.heartbeat()
                except CloisterError as exc:
                    log.warning("heartbeat failed: %s", exc.message)

        thread = threading.Thread(target=beat, name="cloister-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # --- execution ----------------------------------------------------------------------------------------

    def ready_orders(self) -> list[Order]:
        """The fine-tunes ready to run here (deployments are served, not run: see the replica server)."""
        return [o for o in self.ledger.orders(machine_id=self.machine_id, state=READY) if o.kind == FINETUNE]

    def run_ready(self) -> list[LoaderResult]:
        """Run every order that is ready on this machine, one after the other.

        A reassigned order waits (it is skipped until a later call) while its owner's resume grant is missing
        or does not check out: starting it from scratch would charge the owner again for the steps already paid.
        """
        results = []
        for order in self.ready_orders():
            try:
                resume = resume_point(self.ledger, self.store, order, self.machine_id)
            except RecordNotFound:
                log.info("order %s waits for its owner to grant the checkpoint it resumes from", order.order_id)
                continue
            except CloisterError as exc:
                log.warning("order %s: the resume grant is unusable (%s); waiting for a valid one", order.order_id, exc)
                continue
            results.append(self.execute(order, resume=resume))
        return results

    def replica_host(self) -> ReplicaHost:
        """The deployments this machine serves (created on first use, once the machine is registered)."""
        if self._host is None:
            registration = self.registration
            if registration is None:
                raise ConfigError("the node has not registered its machine yet; call register() first")
            self._host = ReplicaHost(
                ledger=self.ledger,
                store=self.store,
                wallet=self.wallet,
                loader_identity=self.loader,
                machine_id=registration.machine_id,
                tcb_id=registration.tcb_id,
                folder=self.folder,
                threads=self.threads,
                fault=self.fault,
            )
        return self._host

    def serve(self, *, once: bool = False, poll_interval: float = 2.0, heartbeat_interval: float = 30.0) -> None:
        """Register, then heart-beat, run ready fine-tunes and serve deployments until interrupted.

        ``once`` runs the ready fine-tunes and returns; it starts no replica, since one would stop (and leave its
        endpoint dead on the ledger) the moment this returns.
        """
        self.register()
        self.heartbeat()
        host = self.replica_host()
        try:
            with self.heartbeats(heartbeat_interval):
                while True:
                    self.run_ready()
                    if once:
                        return
                    host.sync()
                    time.sleep(poll_interval)
        finally:
            host.close()

    def execute(self, order: Order, *, resume: ResumePoint | None = None) -> LoaderResult:
        """Start, run and settle one ready order; on any failure sign a failed report and fail the order.

        ``resume`` continues from a checkpoint another machine left (see :func:`~cloister.node.resume.resume_point`).
        """
        registration = self.registration
        if registration is None:
            raise ConfigError("the node has not registered its machine yet; call register() first")
        offers = {offer_id: self.ledger.offer(offer_id) for offer_id in order.content_offers}
        self.wallet.send(StartOrder(order.order_id, registration.machine_id))
        log.info("order %s started", order.order_id)
        loader = TrustedLoader(
            self.loader,
            registration.machine_id,
            registration.tcb_id,
            self.store,
            self.folder / "work",
            threads=self.threads,
        )
        started = int(time.time())
        try:
            prepared = loader.prepare(
                order, offers, self.ledger.grants(order.order_id), self.ledger.account(order.owner), resume=resume
            )
            outcome = loader.run(prepared, timeout=self.run_timeout, on_checkpoint=self._recorder(order))
            result = loader.finish(prepared, outcome)
        except Exception as exc:  # any failure must reach the ledger, or the escrow stays locked
            reason = _reason(exc)
            log.warning("order %s failed: %s", order.order_id, reason)
            result = loader.fail(order, offers, reason, started_at=started)
            uri = self._publish(order, result)
            self.wallet.send(FailOrder(order.order_id, registration.machine_id, reason, uri))
            return result
        uri = self._publish(order, result)
        usage = result.report.report.usage.seconds
        complete = CompleteOrder(
            order.order_id, registration.machine_id, usage, result.report_digest, result.manifest_digest, uri
        )
        self.wallet.send(complete)
        log.info("order %s completed in %ss, report %s", order.order_id, usage, result.report_digest)
        return result

    def _recorder(self, order: Order) -> CheckpointCallback:
        """Publish each sealed checkpoint's notice for the order owner, then record both with the usage so far.

        A checkpoint that cannot be recorded is logged, not fatal: the job goes on and the next checkpoint is
        recorded instead.
        """
        started = time.monotonic()

        def record(sealed: SealedCheckpoint) -> None:
            point = sealed.checkpoint
            try:
                notice = CheckpointNotice(order.order_id, self.machine_id, point, sealed.owner_key)
                uri = publish_notice(self.store, notice, self.loader)
                usage = wall_seconds(time.monotonic() - started)
                self.wallet.send(
                    RecordCheckpoint(order.order_id, self.machine_id, point.step, usage, point.digest, uri)
                )
            except CloisterError as exc:
                log.warning("order %s: checkpoint at step %s not recorded: %s", order.order_id, point.step, exc)
                return
            log.info("order %s: checkpoint at step %s recorded after %ss", order.order_id, point.step, usage)

        return record

    def _publish(self, order: Order, result: LoaderResult) -> str:
        """Put the delivery in the blob store; returns its URI for the ledger."""
        delivery = Delivery(
            order_id=order.order_id,
            report=result.report_bytes,
            manifest=result.manifest_bytes,
            result_keys={sealed.output.name: sealed.sealed_key for sealed in result.outputs},
            checkpoints=tuple(OwnerCheckpoint(c.checkpoint, c.owner_key) for c in result.checkpoints),
        )
        return publish_delivery(self.store, delivery)

"""The trusted loader: the code inside the TEE that turns sealed inputs into sealed, signed results.

Three steps, so a node can report state in between: :meth:`TrustedLoader.prepare` opens every key grant and
decrypts, re-hashes and unpacks every input into a fresh workspace, refusing the job (typed
:class:`~cloister.errors.InputRefused`, workspace wiped) on any failed check before the engine exists;
:meth:`~TrustedLoader.run` starts the engine sandboxed, meters it and seals its checkpoints as they appear;
:meth:`~TrustedLoader.finish` seals every output to the order owner, wipes the workspace and signs the order
report and provenance manifest. :meth:`~TrustedLoader.fail` signs a failed report instead. The ledger stays
outside: the loader takes typed records and returns bytes and digests for the node to publish.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloister.crypto.grants import open_key_grant
from cloister.crypto.identity import Identity
from cloister.engines import bundle
from cloister.engines.job import JobSpec, read_progress
from cloister.engines.manifest import EngineManifest
from cloister.engines.runner import start_engine
from cloister.errors import CloisterError, DigestMismatch, InputRefused, LoaderError, StorageError
from cloister.ledger.records import (
    DATASET,
    ENGINE,
    INFERENCE,
    MODEL,
    Account,
    DeploymentTerms,
    KeyGrant,
    Offer,
    Order,
)
from cloister.provenance.dsse import Envelope
from cloister.provenance.fields import ContentRef
from cloister.provenance.report import (
    FAILED,
    Checkpoint,
    OrderReport,
    Output,
    SignedReport,
    Usage,
    Wipe,
    report_digest,
    sign_report,
)
from cloister.provenance.statement import FinetunePredicate, Subject, build_manifest, manifest_digest
from cloister.runtime.archive import is_archive_name, pack_folder, unpack_folder
from cloister.runtime.checkpoints import (
    CheckpointContext,
    CheckpointSealer,
    ResumePoint,
    SealedCheckpoint,
    restore_checkpoint,
)
from cloister.runtime.metering import engine_params, last_int, read_metrics, signed_params, wall_seconds
from cloister.runtime.results import seal_result_key
from cloister.runtime.transfer import fetch_and_open, seal_and_upload
from cloister.runtime.workspace import Workspace
from cloister.storage import BlobStore

MODEL_ROLE = "model"
DATASETS_ROLE = "datasets"
ADAPTERS_ROLE = "adapters"
_SUFFIX_RE = re.compile(r"\.[A-Za-z0-9]{1,16}$")
ProgressCallback = Callable[[Mapping[str, Any]], None]
CheckpointCallback = Callable[[SealedCheckpoint], None]


@dataclass(frozen=True)
class PreparedJob:
    """An order whose inputs are all decrypted and checked in its workspace, ready to run."""

    order: Order
    owner: Account
    workspace: Workspace
    manifest: EngineManifest
    engine: ContentRef
    model: ContentRef
    datasets: tuple[ContentRef, ...]
    inputs: Mapping[str, tuple[Path, ...]]
    params: Mapping[str, Any]
    started_at: int
    resumed: Checkpoint | None = None
    adapters: tuple[ContentRef, ...] = ()


@dataclass(frozen=True)
class RunOutcome:
    """A finished engine run: metered usage, the progress lines and every checkpoint sealed during it."""

    seconds: float
    usage: Usage
    progress: tuple[Mapping[str, Any], ...]
    checkpoints: tuple[SealedCheckpoint, ...]
    ended_at: int


@dataclass(frozen=True)
class SealedOutput:
    """One output in the store and its DEK sealed to the order owner (:func:`~cloister.runtime.results.open_result`)."""

    output: Output
    sealed_key: bytes


@dataclass(frozen=True)
class LoaderResult:
    """What the node publishes: the signed report and manifest, their digests for the ledger, the sealed outputs."""

    report: SignedReport
    report_bytes: bytes
    report_digest: str
    manifest_bytes: bytes | None
    manifest_digest: str | None
    outputs: tuple[SealedOutput, ...] = ()
    checkpoints: tuple[SealedCheckpoint, ...] = ()


@dataclass
class TrustedLoader:
    """One machine's loader. ``identity`` holds the attested loader keys; ``tcb_id`` is the digest of its TCB."""

    identity: Identity
    machine_id: str
    tcb_id: str
    store: BlobStore
    workspace_root: Path
    clock: Callable[[], float] = time.time
    threads: int | None = None
    poll_interval: float = 0.5
    _wipes: dict[str, Wipe] = field(default_factory=dict, repr=False)

    # --- prepare ---------------------------------------------------------------------------------------------

    def prepare(
        self,
        order: Order,
        offers: Mapping[str, Offer],
        grants: Sequence[KeyGrant],
        owner: Account,
        *,
        resume: ResumePoint | None = None,
    ) -> PreparedJob:
        """Open, decrypt and re-hash every input of ``order`` for this machine, or refuse with nothing left behind.

        ``owner`` is the order owner's account (outputs and checkpoints are sealed to its key); ``resume`` a
        checkpoint to continue from, with a key grant for it to this machine.
        """
        if owner.address != order.owner:
            raise LoaderError(f"account {owner.address} is not the owner {order.owner} of order {order.order_id}")
        if self.machine_id not in order.machines:
            raise LoaderError(f"order {order.order_id} is not assigned to machine {self.machine_id}; do not run it")
        started_at = int(self.clock())
        workspace = Workspace.create(self.workspace_root, order.order_id)
        try:
            return self._prepare(order, offers, grants, owner, workspace, started_at, resume)
        except BaseException:
            self._wipes[order.order_id] = workspace.wipe(now=int(self.clock()))
            raise

    def _prepare(
        self,
        order: Order,
        offers: Mapping[str, Offer],
        grants: Sequence[KeyGrant],
        owner: Account,
        workspace: Workspace,
        started_at: int,
        resume: ResumePoint | None,
    ) -> PreparedJob:
        engine_offer = _offer(offers, order.engine_offer, ENGINE)
        model_offer = _offer(offers, order.model_offer, MODEL)
        dataset_offers = [_offer(offers, offer_id, DATASET) for offer_id in order.dataset_offers]
        adapter_offers = [_offer(offers, offer_id, MODEL) for offer_id in order.adapter_offers]
        engine = _ref(engine_offer)
        for offer in (model_offer, *dataset_offers, *adapter_offers):
            allowed = offer.restrictions.engine_digests
            if allowed and engine.digest not in allowed:
                raise InputRefused(
                    f"offer {offer.offer_id} allows only engines {', '.join(allowed)}, not {engine.digest}; "
                    "its owner did not consent to this engine reading it",
                    input=offer.offer_id,
                    check="engine allowed",
                )
        bundle_file = workspace.scratch / "engine.tar"
        self._open_input(order, engine_offer, grants, bundle_file, workspace, engine.digest)
        try:
            manifest = bundle.unpack(bundle_file.read_bytes(), workspace.engine, expected_digest=engine.digest)
        except CloisterError as exc:
            raise InputRefused(
                f"engine bundle {engine_offer.offer_id}: {exc.message}", input=engine_offer.offer_id, check="bundle"
            ) from None
        finally:
            bundle_file.unlink(missing_ok=True)
        given = order.params
        if order.kind == INFERENCE:  # the deployment's terms are for the ledger and the gateway, not the engine
            given = {name: value for name, value in given.items() if name not in DeploymentTerms.PARAMS}
        try:
            params = engine_params(manifest, given)
        except CloisterError as exc:
            raise InputRefused(exc.message, input="params", check="parameters") from None
        roles = {MODEL_ROLE: [model_offer], DATASETS_ROLE: dataset_offers, ADAPTERS_ROLE: adapter_offers}
        inputs = {
            role: tuple(self._input(order, o, grants, workspace, role, engine.digest) for o in role_offers)
            for role, role_offers in roles.items()
            if role_offers or role in manifest.inputs
        }
        try:
            manifest.check_inputs(inputs)
        except CloisterError as exc:
            raise InputRefused(exc.message, input="inputs", check="engine inputs") from None
        if resume is not None:
            restore_checkpoint(
                self.store,
                resume,
                self.identity,
                order_id=order.order_id,
                machine_id=self.machine_id,
                engine_digest=engine.digest,
                folder=workspace.checkpoints,
                scratch=workspace.scratch,
            )
        return PreparedJob(
            order=order,
            owner=owner,
            workspace=workspace,
            manifest=manifest,
            engine=engine,
            model=_ref(model_offer),
            datasets=tuple(_ref(offer) for offer in dataset_offers),
            inputs=inputs,
            params=params,
            started_at=started_at,
            resumed=resume.checkpoint if resume is not None else None,
            adapters=tuple(_ref(offer) for offer in adapter_offers),
        )

    def _input(
        self,
        order: Order,
        offer: Offer,
        grants: Sequence[KeyGrant],
        workspace: Workspace,
        role: str,
        engine_digest: str,
    ) -> Path:
        """Decrypt one model or dataset into ``inputs/<role>/``; a ``….tar`` offer becomes a folder."""
        folder = workspace.inputs / role
        folder.mkdir(mode=0o700, exist_ok=True)
        suffix = match.group(0) if (match := _SUFFIX_RE.search(offer.name)) else ""
        target = folder / f"{offer.offer_id}{suffix}"
        self._open_input(order, offer, grants, target, workspace, engine_digest)
        if not is_archive_name(target.name):
            return target
        unpacked = folder / offer.offer_id
        try:
            unpack_folder(target, unpacked)
        except CloisterError as exc:
            raise InputRefused(
                f"offer {offer.offer_id}: {exc.message}", input=offer.offer_id, check="archive"
            ) from None
        finally:
            target.unlink(missing_ok=True)
        return unpacked

    def _open_input(
        self,
        order: Order,
        offer: Offer,
        grants: Sequence[KeyGrant],
        dest: Path,
        workspace: Workspace,
        engine_digest: str,
    ) -> None:
        """Open this machine's grant for ``offer``, then fetch, decrypt and re-hash its content into ``dest``."""
        digest, uri = _ref(offer).digest, str(offer.blob_uri)
        grant = next(
            (
                g
                for g in grants
                if (g.order_id, g.offer_id, g.machine_id) == (order.order_id, offer.offer_id, self.machine_id)
            ),
            None,
        )
        if grant is None:
            raise InputRefused(
                f"there is no key grant for offer {offer.offer_id} to machine {self.machine_id} in order "
                f"{order.order_id}; wait for its owner's keeper to grant, or ask the owner",
                input=offer.offer_id,
                check="grant",
            )
        try:
            dek = open_key_grant(
                grant.sealed_key,
                self.identity.sealing_private_key,
                order_id=order.order_id,
                content_digest=digest,
                machine_id=self.machine_id,
                engine_digest=engine_digest,
            )
        except CloisterError as exc:
            raise InputRefused(exc.message, input=offer.offer_id, check="grant") from None
        try:
            fetch_and_open(self.store, uri, dek, dest, expected_digest=digest, scratch=workspace.scratch)
        except DigestMismatch as exc:
            raise InputRefused(
                f"offer {offer.offer_id}: {exc.message}", input=offer.offer_id, check="digest", **exc.details
            ) from None
        except StorageError as exc:
            raise InputRefused(f"offer {offer.offer_id}: {exc.message}", input=offer.offer_id, check="blob") from None
        except CloisterError as exc:
            raise InputRefused(
                f"offer {offer.offer_id}: {exc.message}", input=offer.offer_id, check="decryption"
            ) from None

    # --- run -------------------------------------------------------------------------------------------------

    def run(
        self,
        prepared: PreparedJob,
        *,
        timeout: float,
        on_progress: ProgressCallback | None = None,
        on_checkpoint: CheckpointCallback | None = None,
    ) -> RunOutcome:
        """Run the engine to completion, sealing each checkpoint as it appears; engine errors propagate.

        ``on_checkpoint`` sees each sealed checkpoint as soon as it is uploaded, so a node can record it while
        the engine runs. After a failure call :meth:`fail` so the workspace is wiped and a failed report signed.
        """
        ws = prepared.workspace
        job = JobSpec(
            inputs=prepared.inputs,
            params=prepared.params,
            outputs_dir=ws.outputs,
            checkpoint_dir=ws.checkpoints,
            progress_file=ws.progress_file,
        )
        sealer = CheckpointSealer(
            self.store,
            ws.checkpoints,
            ws.scratch,
            CheckpointContext(
                prepared.order.order_id,
                self.machine_id,
                prepared.engine.digest,
                self.identity.public.sealing_key,
                prepared.owner.address,
                prepared.owner.sealing_key,
            ),
            self.clock,
            after_step=prepared.resumed.step if prepared.resumed is not None else -1,
        )
        seen = 0
        with start_engine(ws.engine, job, workspace=ws.path, threads=self.threads) as process:
            started = time.monotonic()
            while process.running() and time.monotonic() - started < timeout:
                time.sleep(self.poll_interval)
                _announce(sealer.collect(), on_checkpoint)
                seen = _report_progress(ws.progress_file, seen, on_progress)
            result = process.wait(timeout)
        _announce(sealer.collect(), on_checkpoint)
        _report_progress(ws.progress_file, seen, on_progress)
        first = prepared.resumed.step if prepared.resumed is not None else 0
        usage = Usage(
            seconds=wall_seconds(result.seconds),
            steps=max(0, last_int(result.progress, "step") - first),
            tokens=last_int(result.progress, "tokens"),
        )
        return RunOutcome(result.seconds, usage, result.progress, tuple(sealer.sealed), int(self.clock()))

    # --- finish ----------------------------------------------------------------------------------------------

    def finish(self, prepared: PreparedJob, outcome: RunOutcome) -> LoaderResult:
        """Seal every output to the order owner, wipe the workspace, sign the report and the manifest."""
        ws, order = prepared.workspace, prepared.order
        try:
            metrics = read_metrics(ws.outputs)
            outputs = tuple(self._seal_output(prepared, entry) for entry in sorted(ws.outputs.iterdir()))
        finally:
            wipe = ws.wipe(now=max(int(self.clock()), outcome.ended_at))
        if not outputs:
            raise LoaderError(f"the engine wrote no outputs for order {order.order_id}; nothing to deliver")
        history = self._history(prepared, outcome)
        report = OrderReport(
            order_id=order.order_id,
            machine_id=self.machine_id,
            tcb_id=self.tcb_id,
            engine=prepared.engine,
            inputs=(prepared.model, *prepared.datasets),
            outputs=tuple(sealed.output for sealed in outputs),
            started_at=prepared.started_at,
            ended_at=outcome.ended_at,
            usage=outcome.usage,
            checkpoints=history,
            wipe=wipe,
        )
        predicate = FinetunePredicate(
            order_id=order.order_id,
            machine_id=self.machine_id,
            tcb_id=self.tcb_id,
            loader_key=self.identity.public.signing_key,
            base_model=prepared.model,
            datasets=prepared.datasets,
            engine=prepared.engine,
            hyperparameters=signed_params(prepared.params),
            metrics=metrics,
            started_at=prepared.started_at,
            ended_at=outcome.ended_at,
        )
        subjects = [Subject(sealed.output.name, sealed.output.digest) for sealed in outputs]
        envelope: Envelope = build_manifest(subjects, predicate, self.identity)
        return _result(sign_report(report, self.identity), envelope, outputs, outcome.checkpoints)

    def _seal_output(self, prepared: PreparedJob, entry: Path) -> SealedOutput:
        scratch = prepared.workspace.scratch
        source = entry
        if entry.is_dir():
            source = scratch / f"{entry.name}.tar"
            pack_folder(entry, source)
        blob = seal_and_upload(self.store, source, scratch=scratch)
        owner = prepared.owner
        sealed_key = seal_result_key(
            blob.dek,
            owner.sealing_key,
            owner_address=owner.address,
            order_id=prepared.order.order_id,
            content_digest=blob.digest,
        )
        return SealedOutput(Output(source.name, blob.digest, blob.uri), sealed_key)

    def _history(self, prepared: PreparedJob, outcome: RunOutcome) -> tuple[Checkpoint, ...]:
        earlier = (prepared.resumed,) if prepared.resumed is not None else ()
        return (*earlier, *(sealed.checkpoint for sealed in outcome.checkpoints))

    # --- failure ---------------------------------------------------------------------------------------------

    def fail(self, order: Order, offers: Mapping[str, Offer], reason: str, *, started_at: int) -> LoaderResult:
        """Wipe what is left of the order's workspace and sign a failed report saying why."""
        workspace = Workspace(Path(self.workspace_root) / order.order_id)
        now = int(self.clock())
        wipe = workspace.wipe(now=now) if workspace.exists() else self._wipes.pop(order.order_id, None)
        if wipe is None:
            wipe = Wipe(paths=("(none)",), files=0, size=0, at=now)
        refs = {offer_id: ContentRef(offer_id, str(o.content_digest)) for offer_id, o in offers.items()}
        missing = [offer_id for offer_id in order.content_offers if offer_id not in refs]
        if missing:
            raise LoaderError(f"the offers {', '.join(missing)} of order {order.order_id} are needed for its report")
        report = OrderReport(
            order_id=order.order_id,
            machine_id=self.machine_id,
            tcb_id=self.tcb_id,
            engine=refs[order.engine_offer],
            inputs=tuple(refs[offer_id] for offer_id in (order.model_offer, *order.dataset_offers)),
            outputs=(),
            started_at=min(started_at, wipe.at),
            ended_at=wipe.at,
            usage=Usage(seconds=max(0, wipe.at - started_at), steps=0, tokens=0),
            checkpoints=(),
            wipe=wipe,
            outcome=FAILED,
            failure_reason=reason[:4096],
        )
        return _result(sign_report(report, self.identity), None, (), ())


def _offer(offers: Mapping[str, Offer], offer_id: str, kind: str) -> Offer:
    offer = offers.get(offer_id)
    if offer is None:
        raise InputRefused(
            f"the offer {offer_id} named by the order was not given to the loader; fetch it from the ledger",
            input=offer_id,
            check="offer",
        )
    if offer.offer_id != offer_id or offer.kind != kind or offer.content_digest is None or offer.blob_uri is None:
        raise InputRefused(
            f"offer {offer_id} is not the {kind} content offer the order names (it is a {offer.kind} offer "
            f"{offer.offer_id})",
            input=offer_id,
            check="offer",
        )
    return offer


def _ref(offer: Offer) -> ContentRef:
    return ContentRef(offer.offer_id, str(offer.content_digest))


def _report_progress(path: Path, seen: int, on_progress: ProgressCallback | None) -> int:
    if on_progress is None:
        return seen
    entries = read_progress(path)
    for entry in entries[seen:]:
        on_progress(entry)
    return len(entries)


def _announce(sealed: list[SealedCheckpoint], on_checkpoint: CheckpointCallback | None) -> None:
    if on_checkpoint is not None:
        for checkpoint in sealed:
            on_checkpoint(checkpoint)


def _result(
    signed: SignedReport,
    envelope: Envelope | None,
    outputs: tuple[SealedOutput, ...],
    checkpoints: tuple[SealedCheckpoint, ...],
) -> LoaderResult:
    return LoaderResult(
        report=signed,
        report_bytes=signed.to_bytes(),
        report_digest=report_digest(signed),
        manifest_bytes=envelope.to_bytes() if envelope is not None else None,
        manifest_digest=manifest_digest(envelope) if envelope is not None else None,
        outputs=outputs,
        checkpoints=checkpoints,
    )

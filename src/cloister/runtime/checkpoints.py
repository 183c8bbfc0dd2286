"""Encrypted checkpoints: every finished checkpoint folder is packed, sealed, uploaded and recorded.

The engine contract: a checkpoint is a folder ``checkpoints/step-<n>`` (``n`` zero-padded to 8 digits) that
appears complete (written elsewhere, then renamed). Each is packed (:mod:`cloister.runtime.archive`), sealed
with a fresh DEK and uploaded. The DEK is kept twice, never in the clear: as a key grant to this loader's own
key (bound to order, checkpoint digest and this machine) so the loader can resume after a restart, and as a
result key to the order owner, so that after a fail-over the owner's keeper can re-grant it to the replacement
machine's attested key. Either way the resuming loader receives an ordinary key grant, opened like any input's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloister.crypto.grants import open_key_grant, seal_key_grant
from cloister.crypto.identity import Identity
from cloister.errors import CloisterError, InputRefused
from cloister.provenance.report import Checkpoint
from cloister.runtime.archive import pack_folder, unpack_folder
from cloister.runtime.results import seal_result_key
from cloister.runtime.transfer import fetch_and_open, seal_and_upload
from cloister.storage import BlobStore

_STEP_RE = re.compile(r"^step-(\d{1,12})$")


def checkpoint_folder(step: int) -> str:
    return f"step-{step:08d}"


@dataclass(frozen=True)
class SealedCheckpoint:
    """A checkpoint in the store, with its DEK sealed to this loader (a key grant) and to the order owner."""

    checkpoint: Checkpoint
    loader_grant: bytes
    owner_key: bytes


@dataclass(frozen=True)
class ResumePoint:
    """Where to resume: the checkpoint record and a key grant for its digest to this machine, for this order."""

    checkpoint: Checkpoint
    grant: bytes


@dataclass(frozen=True)
class CheckpointContext:
    """Who checkpoints of one order are sealed to."""

    order_id: str
    machine_id: str
    engine_digest: str
    loader_sealing_key: bytes
    owner_address: str
    owner_sealing_key: bytes


class CheckpointSealer:
    """Seals each new complete checkpoint once, in step order; call :meth:`collect` while and after the run."""

    def __init__(
        self,
        store: BlobStore,
        folder: Path,
        scratch: Path,
        context: CheckpointContext,
        clock: Callable[[], float],
        *,
        after_step: int = -1,
    ) -> None:
        self._store, self._folder, self._scratch, self._context, self._clock = store, folder, scratch, context, clock
        self._last = after_step
        self.sealed: list[SealedCheckpoint] = []

    def collect(self) -> list[SealedCheckpoint]:
        """Seal every complete checkpoint newer than the last one sealed; returns the new ones."""
        steps = sorted(
            (int(match.group(1)), path)
            for path in (self._folder.iterdir() if self._folder.is_dir() else ())
            if (match := _STEP_RE.match(path.name)) and path.is_dir()
        )
        new = []
        for step, path in steps:
            if step <= self._last:
                continue
            sealed = self._seal(step, path)
            if sealed is not None:
                new.append(sealed)
                self._last = step
        self.sealed.extend(new)
        return new

    def _seal(self, step: int, path: Path) -> SealedCheckpoint | None:
        archive = self._scratch / f"{path.name}.tar"
        try:
            pack_folder(path, archive)
        except (OSError, CloisterError):
            # The engine pruned this checkpoint while it was being packed; a newer one exists.
            archive.unlink(missing_ok=True)
            return None
        try:
            blob = seal_and_upload(self._store, archive, scratch=self._scratch)
        finally:
            archive.unlink(missing_ok=True)
        ctx = self._context
        return SealedCheckpoint(
            Checkpoint(step=step, digest=blob.digest, uri=blob.uri, at=int(self._clock())),
            seal_key_grant(
                blob.dek,
                ctx.loader_sealing_key,
                order_id=ctx.order_id,
                content_digest=blob.digest,
                machine_id=ctx.machine_id,
                engine_digest=ctx.engine_digest,
            ),
            seal_result_key(
                blob.dek,
                ctx.owner_sealing_key,
                owner_address=ctx.owner_address,
                order_id=ctx.order_id,
                content_digest=blob.digest,
            ),
        )


def restore_checkpoint(
    store: BlobStore,
    point: ResumePoint,
    identity: Identity,
    *,
    order_id: str,
    machine_id: str,
    engine_digest: str,
    folder: Path,
    scratch: Path,
) -> None:
    """Open the grant, fetch, decrypt and re-hash the checkpoint, and unpack it as ``folder/step-<n>``."""
    what = f"checkpoint at step {point.checkpoint.step}"
    try:
        dek = open_key_grant(
            point.grant,
            identity.sealing_private_key,
            order_id=order_id,
            content_digest=point.checkpoint.digest,
            machine_id=machine_id,
            engine_digest=engine_digest,
        )
    except CloisterError as exc:
        raise InputRefused(f"{what}: {exc.message}", input=what, check="grant") from None
    archive = scratch / "resume.tar"
    try:
        fetch_and_open(
            store, point.checkpoint.uri, dek, archive, expected_digest=point.checkpoint.digest, scratch=scratch
        )
        unpack_folder(archive, folder / checkpoint_folder(point.checkpoint.step))
    except CloisterError as exc:
        raise InputRefused(f"{what}: {exc.message}", input=what, check="content") from None
    finally:
        archive.unlink(missing_ok=True)

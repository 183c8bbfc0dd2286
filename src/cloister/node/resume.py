"""Fail-over hand-off of checkpoint keys: checkpoints are not content offers, so no ``grant.post``.

* The running loader signs a **checkpoint notice** for each sealed checkpoint (the checkpoint, and its DEK sealed
  to the order owner), puts it in the blob store, and the provider records it with ``order.checkpoint``, whose
  ``notice_uri`` says where the notice is.
* After ``order.reassign``, the order owner opens the owner copy of the latest released checkpoint's DEK and
  seals it to the replacement machine's attested loader key (bound to order, checkpoint digest, machine and
  engine) in an ``order.resume_grant`` transaction: the ledger signature is the owner's.

Each reader trusts only what the ledger pins: the checkpoint's step and digest from the released ``Checkpoint``
record, the notice's signer from the machine record. The content itself is re-hashed against that digest by the
resuming loader, so whoever serves the notice can delay a resume but not alter it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from cloister.crypto.canonical import canonical_json
from cloister.crypto.identity import Identity, verify_signature
from cloister.errors import BindingMismatch, MalformedInput, RecordNotFound
from cloister.ledger.protocol import LedgerReader
from cloister.ledger.records import Checkpoint as CheckpointRecord
from cloister.ledger.records import Order, latest_released
from cloister.node.delivery import _b64, _text, _unb64
from cloister.provenance.fields import json_object, parse_json
from cloister.provenance.report import Checkpoint
from cloister.runtime.checkpoints import ResumePoint
from cloister.storage import BlobStore

NOTICE = "cloister/checkpoint-notice/v1"
MAX_DOCUMENT = 64 << 10
_BODY = ("order_id", "machine_id", "checkpoint", "sealed_key")


@dataclass(frozen=True)
class CheckpointNotice:
    """A checkpoint one machine wrote for an order, and its DEK sealed to the order owner."""

    order_id: str
    machine_id: str
    checkpoint: Checkpoint
    sealed_key: bytes

    def _document(self) -> dict[str, Any]:
        body = {
            "order_id": self.order_id,
            "machine_id": self.machine_id,
            "checkpoint": self.checkpoint.to_json(),
            "sealed_key": _b64(self.sealed_key),
        }
        return {"format": NOTICE, "body": body}

    def _signed(self) -> bytes:
        return canonical_json(self._document())

    def to_bytes(self, signer: Identity) -> bytes:
        return canonical_json({**self._document(), "signature": _b64(signer.sign(NOTICE, self._signed()))})

    @classmethod
    def parse(cls, data: bytes, signing_key: bytes) -> CheckpointNotice:
        """Parse strictly and check the signature by ``signing_key``; any alteration raises."""
        f = json_object(
            parse_json(data, "a checkpoint notice", MAX_DOCUMENT), "checkpoint notice", ("format", "body", "signature")
        )
        if f["format"] != NOTICE:
            raise MalformedInput(f"not a {NOTICE} document (format {f['format']!r:.40}); do not use it")
        body = json_object(f["body"], "checkpoint notice body", _BODY)
        notice = cls(
            order_id=_text(body["order_id"], "checkpoint notice order_id"),
            machine_id=_text(body["machine_id"], "checkpoint notice machine_id"),
            checkpoint=Checkpoint.from_json(body["checkpoint"], "checkpoint notice checkpoint"),
            sealed_key=_unb64(body["sealed_key"], "a sealed checkpoint key"),
        )
        verify_signature(signing_key, NOTICE, notice._signed(), _unb64(f["signature"], "a notice signature"))
        return notice


def publish_notice(store: BlobStore, notice: CheckpointNotice, signer: Identity) -> str:
    """Upload the signed notice; returns the URI the provider records with ``order.checkpoint``."""
    return store.put(io.BytesIO(notice.to_bytes(signer))).uri


def fetch_notice(store: BlobStore, record: CheckpointRecord, signing_key: bytes) -> CheckpointNotice:
    """The notice of the checkpoint the ledger ``record`` pins, signed by ``signing_key`` (its writer's loader)."""
    if record.notice_uri is None or record.checkpoint_digest is None:
        raise RecordNotFound(
            f"machine {record.machine_id} recorded no checkpoint notice for order {record.order_id}",
            key=record.key,
        )
    with store.open(record.notice_uri) as stream:
        notice = CheckpointNotice.parse(stream.read(MAX_DOCUMENT + 1), signing_key)
    got = (notice.order_id, notice.machine_id, notice.checkpoint.step, notice.checkpoint.digest)
    if got != (record.order_id, record.machine_id, record.step, record.checkpoint_digest):
        raise BindingMismatch(
            f"the checkpoint notice the ledger names for order {record.order_id} is for {got}, not the checkpoint "
            f"the ledger recorded (step {record.step}, {record.checkpoint_digest}, machine {record.machine_id}); "
            "do not use it"
        )
    return notice


def resume_point(ledger: LedgerReader, store: BlobStore, order: Order, machine_id: str) -> ResumePoint | None:
    """Where ``machine_id`` resumes ``order``: ``None`` for a fresh start; :class:`RecordNotFound` while the
    owner's resume grant for the latest released checkpoint is not on the ledger yet."""
    record = latest_released(ledger.checkpoints(order.order_id))
    if record is None:
        return None
    grants = [
        grant
        for grant in ledger.resume_grants(order.order_id)
        if grant.machine_id == machine_id and grant.checkpoint_digest == record.checkpoint_digest
    ]
    if not grants:
        raise RecordNotFound(
            f"order {order.order_id} resumes from the checkpoint at step {record.step}, but its owner has not "
            f"granted it to machine {machine_id} yet (order.resume_grant); wait for the owner's keeper",
            key=f"resume/{order.order_id}/{machine_id}",
        )
    notice = fetch_notice(store, record, ledger.machine(record.machine_id).loader_signing_key)
    return ResumePoint(notice.checkpoint, grants[0].sealed_key)

"""Fail-over hand-off of checkpoint keys, off the ledger: checkpoints are not content offers, so no ``grant.post``.

Two signed documents travel through the blob store, announced on the :class:`DeliveryBoard` under the order:

* a **checkpoint notice** (``<order>.checkpoint-<digest hex>``): the running loader announces each sealed
  checkpoint with its DEK sealed to the order owner, signed by the loader's attested key, before the provider
  records it with ``order.checkpoint``;
* a **resume grant** (``<order>.resume-<machine>``): after ``order.reassign``, the order owner opens the owner
  copy of the latest released checkpoint's DEK and seals it to the replacement machine's attested loader key
  (bound to order, checkpoint digest, machine and engine), signed by the owner's account key.

Each reader trusts only what the ledger pins: the checkpoint's step and digest from the released
``Checkpoint`` record, the signer's key from the machine or account record. The content itself is re-hashed
against that digest by the resuming loader, so a board writer can delay a resume but not alter it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import parse_digest
from cloister.crypto.identity import Identity, verify_signature
from cloister.errors import BindingMismatch, MalformedInput
from cloister.ledger.protocol import LedgerReader
from cloister.ledger.records import Checkpoint as CheckpointRecord
from cloister.ledger.records import Order
from cloister.node.delivery import DeliveryBoard, _b64, _text, _unb64
from cloister.provenance.fields import json_object, parse_json
from cloister.provenance.report import Checkpoint
from cloister.runtime.checkpoints import ResumePoint
from cloister.storage import BlobStore

NOTICE = "cloister/checkpoint-notice/v1"
RESUME = "cloister/resume-grant/v1"
MAX_DOCUMENT = 64 << 10
_BODY = ("order_id", "machine_id", "checkpoint", "sealed_key")


def _entry(kind: str, machine_id: str, digest: str) -> str:
    return f"resume-{machine_id}" if kind == RESUME else f"checkpoint-{parse_digest(digest).hex()}"


@dataclass(frozen=True)
class CheckpointKey:
    """A checkpoint and its DEK sealed to one party: the order owner (``NOTICE``) or a machine (``RESUME``).

    ``machine_id`` is the machine that wrote the checkpoint for a notice, the machine that may open it for a
    resume grant.
    """

    kind: str
    order_id: str
    machine_id: str
    checkpoint: Checkpoint
    sealed_key: bytes

    @property
    def entry(self) -> str:
        return _entry(self.kind, self.machine_id, self.checkpoint.digest)

    def _document(self) -> dict[str, Any]:
        body = {
            "order_id": self.order_id,
            "machine_id": self.machine_id,
            "checkpoint": self.checkpoint.to_json(),
            "sealed_key": _b64(self.sealed_key),
        }
        return {"format": self.kind, "body": body}

    def _signed(self) -> bytes:
        return canonical_json(self._document())

    def to_bytes(self, signer: Identity) -> bytes:
        return canonical_json({**self._document(), "signature": _b64(signer.sign(self.kind, self._signed()))})

    @classmethod
    def parse(cls, data: bytes, kind: str, signing_key: bytes) -> CheckpointKey:
        """Parse strictly and check the signature by ``signing_key``; any alteration raises."""
        f = json_object(
            parse_json(data, "a checkpoint key", MAX_DOCUMENT), "checkpoint key", ("format", "body", "signature")
        )
        if f["format"] != kind:
            raise MalformedInput(f"not a {kind} document (format {f['format']!r:.40}); do not use it")
        body = json_object(f["body"], "checkpoint key body", _BODY)
        key = cls(
            kind=kind,
            order_id=_text(body["order_id"], "checkpoint key order_id"),
            machine_id=_text(body["machine_id"], "checkpoint key machine_id"),
            checkpoint=Checkpoint.from_json(body["checkpoint"], "checkpoint key checkpoint"),
            sealed_key=_unb64(body["sealed_key"], "a sealed checkpoint key"),
        )
        verify_signature(signing_key, kind, key._signed(), _unb64(f["signature"], "a checkpoint key signature"))
        return key


def publish_checkpoint_key(store: BlobStore, board: DeliveryBoard, key: CheckpointKey, signer: Identity) -> str:
    """Upload the signed document and announce it under its order; returns its URI."""
    ref = store.put(io.BytesIO(key.to_bytes(signer)))
    board.announce(key.order_id, ref.uri, entry=key.entry)
    return ref.uri


def fetch_checkpoint_key(
    store: BlobStore,
    board: DeliveryBoard,
    kind: str,
    record: CheckpointRecord,
    *,
    machine_id: str,
    signing_key: bytes,
) -> CheckpointKey:
    """The document of ``kind`` for the checkpoint the ledger ``record`` pins, signed by ``signing_key``."""
    digest = str(record.checkpoint_digest)
    with store.open(board.locate(record.order_id, entry=_entry(kind, machine_id, digest))) as stream:
        key = CheckpointKey.parse(stream.read(MAX_DOCUMENT + 1), kind, signing_key)
    got = (key.order_id, key.machine_id, key.checkpoint.step, key.checkpoint.digest)
    if got != (record.order_id, machine_id, record.step, digest):
        raise BindingMismatch(
            f"the {kind} document announced for order {record.order_id} is for {got}, not the checkpoint the "
            f"ledger released (step {record.step}, {digest}, machine {machine_id}); do not use it"
        )
    return key


def latest_released(ledger: LedgerReader, order_id: str) -> CheckpointRecord | None:
    """The newest checkpoint left behind by a machine the order was moved off, if any holds one."""
    released = [c for c in ledger.checkpoints(order_id) if c.released and c.checkpoint_digest is not None]
    return max(released, key=lambda c: c.step, default=None)


def resume_point(
    ledger: LedgerReader, store: BlobStore, board: DeliveryBoard, order: Order, machine_id: str
) -> ResumePoint | None:
    """Where ``machine_id`` resumes ``order``: ``None`` for a fresh start, or raise while no valid grant is there."""
    record = latest_released(ledger, order.order_id)
    if record is None:
        return None
    owner = ledger.account(order.owner)
    key = fetch_checkpoint_key(store, board, RESUME, record, machine_id=machine_id, signing_key=owner.signing_key)
    return ResumePoint(key.checkpoint, key.sealed_key)

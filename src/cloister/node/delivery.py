"""What a node hands the order owner: the signed report, the manifest and the sealed keys, as one document.

The document is published to the blob store and its URI recorded on the ledger with ``order.complete`` (or
``order.fail``), next to the report and manifest digests. Nothing in it is trusted on arrival: the owner checks
the report and manifest against those digests and the machine's attested loader key, and the keys open only
with the owner's own key.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any

from cloister.crypto.canonical import canonical_json
from cloister.errors import InvalidState, MalformedInput
from cloister.ledger.records import Order
from cloister.provenance.fields import json_list, json_object, parse_json
from cloister.provenance.report import MAX_CHECKPOINTS, Checkpoint
from cloister.storage import BlobStore

FORMAT = "cloister/delivery/v1"
MAX_DELIVERY = 4 << 20
_FIELDS = ("format", "order_id", "report", "manifest", "result_keys", "checkpoints")
_ORDER_ID = re.compile(r"^or-[0-9a-f]{16}$")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(value: object, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise MalformedInput(f"{what} must be non-empty standard base64; the delivery was altered, do not use it")
    return raw


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedInput(f"{what} must be a non-empty string; the delivery was altered, do not use it")
    return value


@dataclass(frozen=True)
class OwnerCheckpoint:
    """A checkpoint and its DEK sealed to the order owner, who can re-grant it to a replacement machine."""

    checkpoint: Checkpoint
    owner_key: bytes


@dataclass(frozen=True)
class Delivery:
    order_id: str
    report: bytes
    """The signed order report, exactly as the loader produced it (its digest is on the ledger)."""
    manifest: bytes | None
    result_keys: dict[str, bytes]
    """Output name → its DEK sealed to the order owner."""
    checkpoints: tuple[OwnerCheckpoint, ...] = ()

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "order_id": self.order_id,
            "report": self.report.decode(),
            "manifest": None if self.manifest is None else self.manifest.decode(),
            "result_keys": {name: _b64(key) for name, key in sorted(self.result_keys.items())},
            "checkpoints": [
                {"checkpoint": item.checkpoint.to_json(), "owner_key": _b64(item.owner_key)}
                for item in self.checkpoints
            ],
        }

    @classmethod
    def parse(cls, data: bytes) -> Delivery:
        """Parse a delivery strictly; tampering with its shape raises :class:`MalformedInput`."""
        f = json_object(parse_json(data, "a delivery", MAX_DELIVERY), "delivery", _FIELDS)
        if f["format"] != FORMAT:
            raise MalformedInput(f"not a Cloister delivery (format {f['format']!r:.40}, expected {FORMAT})")
        order_id = _text(f["order_id"], "delivery.order_id")
        if not _ORDER_ID.match(order_id):
            raise MalformedInput(f"delivery.order_id {order_id!r:.40} is not an order id")
        manifest = None if f["manifest"] is None else _text(f["manifest"], "delivery.manifest").encode()
        keys = f["result_keys"]
        if not isinstance(keys, dict):
            raise MalformedInput("delivery.result_keys must be an object of output name → sealed key")
        checkpoints = []
        for index, item in enumerate(json_list(f["checkpoints"], "delivery.checkpoints", MAX_CHECKPOINTS)):
            entry = json_object(item, f"delivery.checkpoints[{index}]", ("checkpoint", "owner_key"))
            checkpoint = Checkpoint.from_json(entry["checkpoint"], f"delivery.checkpoints[{index}].checkpoint")
            checkpoints.append(OwnerCheckpoint(checkpoint, _unb64(entry["owner_key"], "a checkpoint owner key")))
        return cls(
            order_id=order_id,
            report=_text(f["report"], "delivery.report").encode(),
            manifest=manifest,
            result_keys={
                _text(name, "an output name"): _unb64(key, f"the key of {name}") for name, key in keys.items()
            },
            checkpoints=tuple(checkpoints),
        )


def publish_delivery(store: BlobStore, delivery: Delivery) -> str:
    """Upload the delivery; returns the URI the node records on the ledger with ``order.complete``/``order.fail``."""
    return store.put(io.BytesIO(delivery.to_bytes())).uri


def fetch_delivery(store: BlobStore, order: Order) -> Delivery:
    """The delivery the ledger names for ``order``; nothing in it is trusted until checked against the ledger."""
    if order.delivery_uri is None:
        raise InvalidState(
            f"order {order.order_id} is {order.state} and names no delivery on the ledger yet; "
            "wait until its node completes (or fails) it"
        )
    with store.open(order.delivery_uri) as stream:
        data = stream.read(MAX_DELIVERY + 1)
    delivery = Delivery.parse(data)
    if delivery.order_id != order.order_id:
        raise MalformedInput(
            f"the delivery the ledger names for order {order.order_id} is for order {delivery.order_id}; do not use it"
        )
    return delivery

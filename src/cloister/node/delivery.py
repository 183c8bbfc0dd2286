"""What a node hands the order owner: the signed report, the manifest and the sealed keys, as one document.

The ledger records only the report digest, so the document is published to the blob store and announced on a
:class:`DeliveryBoard` by order id. Nothing in it is trusted on arrival: the owner checks the report against the
digest on the ledger and the machine's attested loader key, and the keys open only with the owner's own key.

The board is a shared folder (a devnet's ``deliveries/``); a network whose parties share no folder needs the
delivery URI on the ledger (a field of ``order.complete``), which the contracts do not have yet.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloister.crypto.canonical import canonical_json
from cloister.errors import BlobNotFound, ConfigError, MalformedInput
from cloister.provenance.fields import json_list, json_object, parse_json
from cloister.provenance.report import MAX_CHECKPOINTS, Checkpoint
from cloister.storage import BlobStore

FORMAT = "cloister/delivery/v1"
MAX_DELIVERY = 4 << 20
_FIELDS = ("format", "order_id", "report", "manifest", "result_keys", "checkpoints")
_ORDER_ID = re.compile(r"^or-[0-9a-f]{16}$")
_ENTRY = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


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


class DeliveryBoard:
    """Order id → the blob URI of its delivery, in a folder every party of a devnet can read.

    An order may also have named entries (``<order id>.<entry>``), e.g. the checkpoint notices and resume grants
    of a fail-over (:mod:`cloister.node.resume`).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, order_id: str, entry: str) -> Path:
        if not _ORDER_ID.match(order_id):
            raise ConfigError(f"{order_id!r} is not an order id (or-<16 hex digits>)")
        if entry and not _ENTRY.match(entry):
            raise ConfigError(f"{entry!r} is not a board entry name (letters, digits, '-' and '_')")
        return self.folder / (f"{order_id}.{entry}" if entry else order_id)

    def announce(self, order_id: str, uri: str, *, entry: str = "") -> None:
        path = self._path(order_id, entry)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        with os.fdopen(fd, "w") as handle:
            handle.write(uri)
        Path(tmp).replace(path)

    def locate(self, order_id: str, *, entry: str = "") -> str:
        try:
            return self._path(order_id, entry).read_text().strip()
        except FileNotFoundError:
            what = f"{entry} entry" if entry else "delivery"
            raise BlobNotFound(
                f"no {what} is announced for order {order_id} in {self.folder}; wait until the node (or the order "
                "owner, for a resume grant) announces it, or point --deliveries at the folder it announces to"
            ) from None


def publish_delivery(store: BlobStore, board: DeliveryBoard, delivery: Delivery) -> str:
    """Upload the delivery and announce it; returns its URI."""
    ref = store.put(io.BytesIO(delivery.to_bytes()))
    board.announce(delivery.order_id, ref.uri)
    return ref.uri


def fetch_delivery(store: BlobStore, board: DeliveryBoard, order_id: str) -> Delivery:
    with store.open(board.locate(order_id)) as stream:
        data = stream.read(MAX_DELIVERY + 1)
    delivery = Delivery.parse(data)
    if delivery.order_id != order_id:
        raise MalformedInput(
            f"the delivery announced for order {order_id} is for order {delivery.order_id}; do not use it"
        )
    return delivery

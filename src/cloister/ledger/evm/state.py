"""The contract's storage seen as a :class:`~cloister.ledger.state.StateStore`, so reads reuse StateReader.

Each key (``offer/<id>``, ``grant/<order>/`` …) maps to one view of the contract; the values are the records'
JSON forms. A key the contract has no record for (or that could not name one) reads as ``None``, exactly like
a missing row, so every "not found" message is the embedded ledger's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from cloister.errors import RecordNotFound
from cloister.ledger.contracts.call import Stored
from cloister.ledger.evm import codec
from cloister.ledger.records import checkpoint_prefix, grant_prefix, refusal_prefix

View = Callable[[str, tuple[Any, ...]], tuple[Any, ...]]
BindingCheck = Callable[[str, bytes, bytes], None]


class ChainState:
    """Read-only state over the contract's views (``view(name, args)`` is an ``eth_call``)."""

    def __init__(self, view: View, check_binding: BindingCheck) -> None:
        self._view = view
        self._check_binding = check_binding

    def get(self, key: str) -> dict[str, Any] | None:
        kind, _, ident = key.partition("/")
        try:
            record = self._load(kind, ident)
        except (RecordNotFound, ValueError, TypeError, OverflowError):
            return None  # no such record, or a key that cannot name one (bad hex, wrong length)
        return None if record is None else record.to_json()

    def _load(self, kind: str, ident: str) -> Stored | None:
        if kind == "account":
            raw = codec.address_bytes(ident)
            (value,) = self._view("getAccount", (raw,))
            self._check_binding(value[0], value[4], value[7])
            return codec.account_record(raw, value)
        if kind == "challenge":
            raw = codec.address_bytes(ident)
            return codec.challenge_record(raw, self._view("getChallenge", (raw,))[0])
        if kind == "provider":
            raw = codec.address_bytes(ident)
            (value,) = self._view("getProvider", (raw,))
            return codec.provider_record(raw, value)
        if kind == "machine":
            return codec.machine_record(self._view("getMachine", (codec.id_bytes(ident),))[0])
        if kind == "offer":
            return codec.offer_record(self._view("getOffer", (codec.id_bytes(ident),))[0])
        if kind == "order":
            return codec.order_record(self._view("getOrder", (codec.id_bytes(ident),))[0])
        return None

    def scan(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        records: list[Stored]
        if prefix == "machine/":
            records = [codec.machine_record(v) for v in self._view("getMachines", ())[0]]
        elif prefix == "offer/":
            records = [codec.offer_record(v) for v in self._view("getOffers", ())[0]]
        elif prefix == "order/":
            records = [codec.order_record(v) for v in self._view("getOrders", ())[0]]
        elif prefix.startswith("grant/"):
            order_id = prefix.split("/")[1]
            if prefix != grant_prefix(order_id):
                return
            (values,) = self._view("getGrants", (codec.id_bytes(order_id),))
            records = [codec.grant_record(order_id, v) for v in values]
        elif prefix.startswith("refusal/"):
            order_id = prefix.split("/")[1]
            if prefix != refusal_prefix(order_id):
                return
            (values,) = self._view("getRefusals", (codec.id_bytes(order_id),))
            records = [codec.refusal_record(order_id, v) for v in values]
        elif prefix.startswith("checkpoint/"):
            order_id = prefix.split("/")[1]
            if prefix != checkpoint_prefix(order_id):
                return
            (values,) = self._view("getCheckpoints", (codec.id_bytes(order_id),))
            records = [codec.checkpoint_record(order_id, v) for v in values]
        else:
            return
        yield from sorted(((r.key, r.to_json()) for r in records), key=lambda item: item[0])

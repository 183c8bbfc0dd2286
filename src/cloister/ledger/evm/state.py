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

View = Callable[[str, tuple[Any, ...]], tuple[Any, ...]]
BindingCheck = Callable[[str, bytes, bytes], None]

_OF_ORDER: dict[str, tuple[str, Callable[[str, tuple[Any, ...]], Stored]]] = {
    "grant": ("getGrants", codec.grant_record),
    "refusal": ("getRefusals", codec.refusal_record),
    "checkpoint": ("getCheckpoints", codec.checkpoint_record),
    "resume": ("getResumeGrants", codec.resume_grant_record),
    "endpoint": ("getEndpoints", codec.endpoint_record),
    "dispute": ("getDisputes", codec.dispute_record),
    "timeout": ("getTimeouts", codec.timeout_record),
}
"""Records kept per order (``<kind>/<order id>/…``): the view that lists them and how to read one."""


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
        if kind == "credit":
            order_id, user = ident.split("/")
            raw = codec.address_bytes(user)
            return codec.credit_record(order_id, raw, self._view("getCredit", (codec.id_bytes(order_id), raw))[0])
        if kind in _OF_ORDER:
            key = f"{kind}/{ident}"
            return next((r for r in self._of_order(kind, ident.split("/")[0]) if r.key == key), None)
        return None

    def _of_order(self, kind: str, order_id: str) -> list[Stored]:
        view, build = _OF_ORDER[kind]
        (values,) = self._view(view, (codec.id_bytes(order_id),))
        return [build(order_id, value) for value in values]

    def scan(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        records: list[Stored]
        kind, _, rest = prefix.partition("/")
        if prefix == "machine/":
            records = [codec.machine_record(v) for v in self._view("getMachines", ())[0]]
        elif prefix == "offer/":
            records = [codec.offer_record(v) for v in self._view("getOffers", ())[0]]
        elif prefix == "order/":
            records = [codec.order_record(v) for v in self._view("getOrders", ())[0]]
        elif kind in _OF_ORDER and rest.count("/") == 1 and rest.endswith("/"):
            records = self._of_order(kind, rest[:-1])
        else:
            return
        yield from sorted(((r.key, r.to_json()) for r in records), key=lambda item: item[0])

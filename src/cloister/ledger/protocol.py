"""The ``Ledger`` protocol: what every backend (in-process, HTTP, later EVM) offers to clients.

Writes go through :meth:`Ledger.submit` as signed, typed transactions; reads return typed records. A backend
raises the typed errors of :mod:`cloister.errors`, never returns ``False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cloister.ledger.envelope import SignedTransaction
from cloister.ledger.records import (
    Account,
    Checkpoint,
    Credit,
    Dispute,
    Endpoint,
    KeyGrant,
    Machine,
    Offer,
    Order,
    Provider,
    Refusal,
    ResumeGrant,
    Timeout,
)


@dataclass(frozen=True)
class Head:
    height: int
    hash: str
    time: int

    def to_json(self) -> dict[str, Any]:
        return {"height": self.height, "hash": self.hash, "time": self.time}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Head:
        return cls(int(data["height"]), str(data["hash"]), int(data["time"]))


@dataclass(frozen=True)
class LedgerEvent:
    """An event emitted by an accepted transaction; ``seq`` is its position in the ledger's event stream."""

    seq: int
    height: int
    kind: str
    attrs: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "height": self.height, "kind": self.kind, "attrs": self.attrs}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LedgerEvent:
        return cls(int(data["seq"]), int(data["height"]), str(data["kind"]), dict(data["attrs"]))


@dataclass(frozen=True)
class EventPage:
    """Events after a cursor; pass ``cursor`` back to get the next page without gaps or repeats."""

    events: list[LedgerEvent]
    cursor: int

    def to_json(self) -> dict[str, Any]:
        return {"events": [e.to_json() for e in self.events], "cursor": self.cursor}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventPage:
        return cls([LedgerEvent.from_json(e) for e in data["events"]], int(data["cursor"]))


@dataclass(frozen=True)
class TxReceipt:
    """Proof of acceptance: the height the transaction was recorded at and the events it emitted."""

    tx_hash: str
    height: int
    events: list[LedgerEvent]

    def to_json(self) -> dict[str, Any]:
        return {"tx_hash": self.tx_hash, "height": self.height, "events": [e.to_json() for e in self.events]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TxReceipt:
        return cls(str(data["tx_hash"]), int(data["height"]), [LedgerEvent.from_json(e) for e in data["events"]])


class LedgerReader(Protocol):
    """Typed reads of contract state. Missing records raise :class:`cloister.errors.RecordNotFound`."""

    def account(self, address: str) -> Account: ...
    def provider(self, address: str) -> Provider: ...
    def machine(self, machine_id: str) -> Machine: ...
    def machines(self, *, provider: str | None = None) -> list[Machine]: ...
    def offer(self, offer_id: str) -> Offer: ...
    def offers(
        self,
        *,
        kind: str | None = None,
        owner: str | None = None,
        content_digest: str | None = None,
        include_retired: bool = False,
    ) -> list[Offer]: ...
    def order(self, order_id: str) -> Order: ...
    def orders(
        self, *, owner: str | None = None, machine_id: str | None = None, state: str | None = None
    ) -> list[Order]: ...
    def grants(self, order_id: str) -> list[KeyGrant]: ...
    def refusals(self, order_id: str) -> list[Refusal]: ...
    def checkpoints(self, order_id: str) -> list[Checkpoint]: ...
    def resume_grants(self, order_id: str) -> list[ResumeGrant]: ...
    def endpoints(self, order_id: str) -> list[Endpoint]: ...
    def credit(self, order_id: str, user: str) -> Credit: ...
    def disputes(self, order_id: str) -> list[Dispute]: ...
    def timeouts(self, order_id: str) -> list[Timeout]: ...


class Ledger(LedgerReader, Protocol):
    @property
    def chain_id(self) -> str: ...
    def submit(self, signed: SignedTransaction) -> TxReceipt: ...
    def head(self) -> Head: ...
    def block_hash(self, height: int) -> str:
        """The hash of the block at ``height`` (0: the genesis); :class:`RecordNotFound` above the head."""
        ...

    def events(self, *, after: int = 0, limit: int = 100) -> EventPage: ...

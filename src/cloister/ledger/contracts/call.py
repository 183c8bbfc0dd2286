"""What a contract handler works with: the block, the sender, buffered state, and the events it emits.

Handlers never touch a clock, the network or a random source: time and randomness come from
:class:`BlockContext`, which the backend fills from the block being built, so a replay gets the same result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from cloister.errors import InsufficientFunds, InvalidState
from cloister.ledger.envelope import SignedTransaction
from cloister.ledger.genesis import ContractParams
from cloister.ledger.queries import StateReader
from cloister.ledger.records import MAX_AMOUNT, Account, derive_id
from cloister.ledger.state import Overlay, StateStore


@dataclasses.dataclass(frozen=True)
class BlockContext:
    """The block a transaction lands in: ``time`` is ledger time, ``randomness`` the previous block hash."""

    height: int
    time: int
    randomness: bytes


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Everything an accepted transaction changes: state writes to commit and events to append, in order."""

    writes: dict[str, dict[str, Any]]
    events: list[tuple[str, dict[str, Any]]]


class Stored(Protocol):
    """A record that knows its own state key."""

    @property
    def key(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


class Call:
    """One transaction being applied; writes stay in an :class:`Overlay` until the backend commits them."""

    def __init__(self, store: StateStore, signed: SignedTransaction, ctx: BlockContext, params: ContractParams) -> None:
        self.state = Overlay(store)
        self.read = StateReader(self.state)
        self.sender = signed.tx.sender
        self.signing_key = signed.public_key
        self.tx_hash = signed.hash
        self.ctx = ctx
        self.params = params
        self.events: list[tuple[str, dict[str, Any]]] = []

    @property
    def now(self) -> int:
        return self.ctx.time

    def exists(self, key: str) -> bool:
        return self.state.get(key) is not None

    def put(self, record: Stored) -> None:
        self.state.put(record.key, record.to_json())

    def emit(self, kind: str, /, **attrs: Any) -> None:
        self.events.append((kind, attrs))

    def new_id(self, prefix: str) -> str:
        """Id of the record this transaction creates (each transaction creates at most one of a kind)."""
        return derive_id(prefix, self.tx_hash)

    def outcome(self) -> Outcome:
        return Outcome(dict(self.state.writes), list(self.events))

    def credit(self, address: str, amount: int) -> None:
        account = self.read.account(address)
        if account.balance + amount > MAX_AMOUNT:
            raise InvalidState(
                f"crediting {amount} units would push {address} past the largest balance the ledger holds "
                f"({MAX_AMOUNT}); move funds out of that account first"
            )
        self.put(dataclasses.replace(account, balance=account.balance + amount))

    def debit(self, address: str, amount: int, purpose: str) -> Account:
        """Take ``amount`` from a balance, or refuse naming what it was for and what is missing."""
        account = self.read.account(address)
        if account.balance < amount:
            raise InsufficientFunds(
                f"{purpose} needs {amount} units but {address} holds {account.balance}; "
                f"fund the account with at least {amount - account.balance} more units",
                needed=amount,
                balance=account.balance,
            )
        updated = dataclasses.replace(account, balance=account.balance - amount)
        self.put(updated)
        return updated


Handler = Callable[[Call, Any], None]
"""A contract handler: applies one typed payload to the call's state, or raises a typed rejection."""

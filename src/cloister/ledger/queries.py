"""Typed reads of contract state: the one implementation of :class:`~cloister.ledger.protocol.LedgerReader`.

Backends wrap their store in a :class:`StateReader`; the contracts read through one too, so a record means the
same thing whether a transaction or a client looks at it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from cloister.crypto.identity import is_address
from cloister.errors import BadRequest, RecordNotFound
from cloister.ledger.records import (
    OFFER_KINDS,
    ORDER_STATES,
    Account,
    Checkpoint,
    Credit,
    Dispute,
    Endpoint,
    JsonRecord,
    KeyGrant,
    Machine,
    Offer,
    Order,
    Provider,
    Refusal,
    ResumeGrant,
    Timeout,
    account_key,
    checkpoint_key,
    checkpoint_prefix,
    credit_key,
    dispute_prefix,
    endpoint_key,
    endpoint_prefix,
    grant_prefix,
    machine_key,
    offer_key,
    order_key,
    provider_key,
    refusal_prefix,
    resume_grant_prefix,
    timeout_prefix,
)
from cloister.ledger.state import StateStore

R = TypeVar("R", bound=JsonRecord)


class StateReader:
    """Typed records over a :class:`StateStore`; a missing one is :class:`RecordNotFound` with a next step."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def _load(self, key: str, cls: type[R], missing: str) -> R:
        value = self.store.get(key)
        if value is None:
            raise RecordNotFound(missing, key=key)
        return cls.from_json(value)

    def _scan(self, prefix: str, cls: type[R], keep: Callable[[R], bool]) -> list[R]:
        records = (cls.from_json(value) for _, value in self.store.scan(prefix))
        return [record for record in records if keep(record)]

    def account(self, address: str) -> Account:
        return self._load(
            account_key(address),
            Account,
            f"account {address} is not registered on this ledger; register it first (account.register)",
        )

    def provider(self, address: str) -> Provider:
        return self._load(
            provider_key(address),
            Provider,
            f"account {address} is not a provider; register as one first (provider.register)",
        )

    def machine(self, machine_id: str) -> Machine:
        return self._load(machine_key(machine_id), Machine, f"no machine {machine_id} on this ledger; check the id")

    def machines(self, *, provider: str | None = None) -> list[Machine]:
        return self._scan("machine/", Machine, lambda m: provider is None or m.provider == provider)

    def offer(self, offer_id: str) -> Offer:
        return self._load(offer_key(offer_id), Offer, f"no offer {offer_id} on this ledger; check the id")

    def offers(
        self,
        *,
        kind: str | None = None,
        owner: str | None = None,
        content_digest: str | None = None,
        include_retired: bool = False,
    ) -> list[Offer]:
        """Offers matching every filter given, oldest id first; retired ones only if asked."""
        _check_filter("kind", kind, OFFER_KINDS)
        return self._scan(
            "offer/",
            Offer,
            lambda o: (
                (include_retired or o.active)
                and kind in (None, o.kind)
                and owner in (None, o.owner)
                and content_digest in (None, o.content_digest)
            ),
        )

    def order(self, order_id: str) -> Order:
        return self._load(order_key(order_id), Order, f"no order {order_id} on this ledger; check the id")

    def orders(
        self, *, owner: str | None = None, machine_id: str | None = None, state: str | None = None
    ) -> list[Order]:
        _check_filter("state", state, ORDER_STATES)
        return self._scan(
            "order/",
            Order,
            lambda o: (
                owner in (None, o.owner)
                and (machine_id is None or machine_id in o.machines)
                and state in (None, o.state)
            ),
        )

    def grants(self, order_id: str) -> list[KeyGrant]:
        """The key grants of an existing order to the machines it is assigned to now.

        Grants to a machine the order was reassigned away from are void (sealed to a dead machine's key); they
        stay in the state but are not listed, as the EVM contract deletes them.
        """
        machines = self.order(order_id).machines
        return self._scan(grant_prefix(order_id), KeyGrant, lambda g: g.machine_id in machines)

    def refusals(self, order_id: str) -> list[Refusal]:
        """Every key refusal recorded for an existing order."""
        self.order(order_id)
        return self._scan(refusal_prefix(order_id), Refusal, lambda _: True)

    def checkpoints(self, order_id: str) -> list[Checkpoint]:
        """The progress recorded for an existing order, one record per machine it ran or was assigned to."""
        self.order(order_id)
        return self._scan(checkpoint_prefix(order_id), Checkpoint, lambda _: True)

    def checkpoint(self, order_id: str, machine_id: str) -> Checkpoint | None:
        return self._find(checkpoint_key(order_id, machine_id), Checkpoint)

    def resume_grants(self, order_id: str) -> list[ResumeGrant]:
        """The checkpoint keys an existing fine-tune's owner handed to replacement machines."""
        self.order(order_id)
        return self._scan(resume_grant_prefix(order_id), ResumeGrant, lambda _: True)

    def endpoints(self, order_id: str) -> list[Endpoint]:
        """Every endpoint an existing deployment's replicas published, those of machines that left it too."""
        self.order(order_id)
        return self._scan(endpoint_prefix(order_id), Endpoint, lambda _: True)

    def endpoint(self, order_id: str, machine_id: str) -> Endpoint | None:
        return self._find(endpoint_key(order_id, machine_id), Endpoint)

    def credit(self, order_id: str, user: str) -> Credit:
        """What ``user`` prepaid for an existing deployment; an empty credit if nothing yet."""
        if not is_address(user):
            raise BadRequest(f"{user!r:.80} is not an account address (cl + 40 hex digits)")
        self.order(order_id)
        return self._find(credit_key(order_id, user), Credit) or Credit(order_id, user, 0, 0, 0)

    def disputes(self, order_id: str) -> list[Dispute]:
        self.order(order_id)
        return self._scan(dispute_prefix(order_id), Dispute, lambda _: True)

    def timeouts(self, order_id: str) -> list[Timeout]:
        self.order(order_id)
        return self._scan(timeout_prefix(order_id), Timeout, lambda _: True)

    def _find(self, key: str, cls: type[R]) -> R | None:
        value = self.store.get(key)
        return None if value is None else cls.from_json(value)


def _check_filter(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise BadRequest(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")

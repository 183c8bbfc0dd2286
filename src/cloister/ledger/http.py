"""A :class:`cloister.ledger.protocol.Ledger` that talks to ``cloister ledger serve`` over HTTP.

The server answers errors with typed bodies, so a rejection raises here exactly the class the ledger raised
(a replayed transaction is a :class:`cloister.errors.NonceMismatch` on both sides).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

from cloister.errors import MalformedInput, RemoteError
from cloister.ledger.envelope import SignedTransaction
from cloister.ledger.protocol import EventPage, Head, TxReceipt
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
from cloister.net import DEFAULT_TIMEOUT, HttpClient

T = TypeVar("T")


class HttpLedger:
    """The ledger at ``url`` (e.g. ``http://127.0.0.1:8645``); safe to share between threads."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self._http = HttpClient(url, timeout=timeout)
        self._chain_id: str | None = None

    def _decode(self, parse: Callable[[Any], T], body: Any) -> T:
        """Parse a success body; a shape we do not know means the URL is not (this version of) a ledger."""
        try:
            return parse(body)
        except (KeyError, TypeError, ValueError, AttributeError, MalformedInput) as exc:
            raise RemoteError(
                f"{self.url} answered with a body this client cannot read ({type(exc).__name__}: {exc}); "
                "is it a Cloister ledger of the same version?"
            ) from None

    def _one(self, parse: Callable[[Any], T], collection: str, record_id: str) -> T:
        return self._decode(parse, self._http.get_json(f"/v1/{collection}/{quote(record_id, safe='')}"))

    def _list(self, parse: Callable[[Any], T], path: str, key: str, params: dict[str, Any]) -> list[T]:
        query = {k: v for k, v in params.items() if v is not None}
        body = self._http.get_json(path, params=query)
        return self._decode(lambda b: [parse(item) for item in b[key]], body)

    @property
    def chain_id(self) -> str:
        """Asked of the server once, then remembered."""
        if self._chain_id is None:
            self._chain_id = self._decode(lambda b: str(b["chain_id"]), self._http.get_json("/v1/health"))
        return self._chain_id

    def submit(self, signed: SignedTransaction) -> TxReceipt:
        return self._decode(TxReceipt.from_json, self._http.post_json("/v1/transactions", signed.to_json()))

    def head(self) -> Head:
        return self._decode(Head.from_json, self._http.get_json("/v1/head"))

    def block_hash(self, height: int) -> str:
        body = self._http.get_json(f"/v1/blocks/{height}/hash")
        return self._decode(lambda b: str(b["hash"]), body)

    def events(self, *, after: int = 0, limit: int = 100) -> EventPage:
        body = self._http.get_json("/v1/events", params={"after": after, "limit": limit})
        return self._decode(EventPage.from_json, body)

    def blocks(self, start: int = 1, limit: int = 100) -> list[dict[str, Any]]:
        """Exported blocks from height ``start`` on, as :meth:`EmbeddedLedger.blocks` returns them."""
        return self._list(dict, "/v1/blocks", "blocks", {"start": start, "limit": limit})

    def account(self, address: str) -> Account:
        return self._one(Account.from_json, "accounts", address)

    def provider(self, address: str) -> Provider:
        return self._one(Provider.from_json, "providers", address)

    def machine(self, machine_id: str) -> Machine:
        return self._one(Machine.from_json, "machines", machine_id)

    def machines(self, *, provider: str | None = None) -> list[Machine]:
        return self._list(Machine.from_json, "/v1/machines", "machines", {"provider": provider})

    def offer(self, offer_id: str) -> Offer:
        return self._one(Offer.from_json, "offers", offer_id)

    def offers(
        self,
        *,
        kind: str | None = None,
        owner: str | None = None,
        content_digest: str | None = None,
        include_retired: bool = False,
    ) -> list[Offer]:
        params = {"kind": kind, "owner": owner, "digest": content_digest, "include_retired": include_retired}
        return self._list(Offer.from_json, "/v1/offers", "offers", params)

    def order(self, order_id: str) -> Order:
        return self._one(Order.from_json, "orders", order_id)

    def orders(
        self, *, owner: str | None = None, machine_id: str | None = None, state: str | None = None
    ) -> list[Order]:
        params = {"owner": owner, "machine": machine_id, "state": state}
        return self._list(Order.from_json, "/v1/orders", "orders", params)

    def grants(self, order_id: str) -> list[KeyGrant]:
        return self._of_order(KeyGrant.from_json, order_id, "grants")

    def refusals(self, order_id: str) -> list[Refusal]:
        return self._of_order(Refusal.from_json, order_id, "refusals")

    def checkpoints(self, order_id: str) -> list[Checkpoint]:
        return self._of_order(Checkpoint.from_json, order_id, "checkpoints")

    def resume_grants(self, order_id: str) -> list[ResumeGrant]:
        return self._of_order(ResumeGrant.from_json, order_id, "resume-grants")

    def endpoints(self, order_id: str) -> list[Endpoint]:
        return self._of_order(Endpoint.from_json, order_id, "endpoints")

    def credit(self, order_id: str, user: str) -> Credit:
        path = f"/v1/orders/{quote(order_id, safe='')}/credits/{quote(user, safe='')}"
        return self._decode(Credit.from_json, self._http.get_json(path))

    def disputes(self, order_id: str) -> list[Dispute]:
        return self._of_order(Dispute.from_json, order_id, "disputes")

    def timeouts(self, order_id: str) -> list[Timeout]:
        return self._of_order(Timeout.from_json, order_id, "timeouts")

    def _of_order(self, parse: Callable[[Any], T], order_id: str, what: str) -> list[T]:
        """The records listed under ``/v1/orders/{order_id}/{what}``."""
        return self._list(parse, f"/v1/orders/{quote(order_id, safe='')}/{what}", what, {})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpLedger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

"""The embedded ledger over HTTP: the JSON API that ``cloister ledger serve`` runs.

Every answer is JSON, errors included: a :class:`~cloister.errors.CloisterError` travels as its ``to_json()``
body with its ``http_status``, so ``HttpLedger`` raises the very class the ledger raised.
Anything unexpected is logged and answered with a 500 body that leaks no traceback; the server keeps serving.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloister.crypto.canonical import loads
from cloister.errors import BadRequest, CloisterError, InvalidTransaction, MalformedInput
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.envelope import SignedTransaction
from cloister.ledger.records import JsonRecord
from cloister.net import read_body

DEFAULT_PORT = 8545
DEFAULT_MAX_BODY = 1 << 20
log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Any]]


def _error_response(error: CloisterError, status: int | None = None) -> JSONResponse:
    return JSONResponse(error.to_json(), status_code=status or error.http_status)


def _json_endpoint(handler: Handler, *, status: int = 200) -> Callable[[Request], Awaitable[Response]]:
    """Turn a handler's value into a JSON response and every failure into a JSON error body."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            value = await handler(request)
        except CloisterError as exc:
            return _error_response(exc)
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.url.path)
            unexpected = CloisterError(
                "the ledger server hit an unexpected error (logged on the server); retry, and report it if it repeats"
            )
            return _error_response(unexpected, 500)
        return JSONResponse(value, status_code=status)

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) as JSON bodies, like every other answer."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error = BadRequest(
        f"no endpoint {request.method} {request.url.path} (HTTP {status}); the API lives under /v1, see GET /v1/health",
        path=request.url.path,
    )
    return _error_response(error, status)


class _Query:
    """Typed access to query parameters; unknown or repeated names are refused, not ignored."""

    def __init__(self, request: Request, *allowed: str) -> None:
        self.params = request.query_params
        for name in self.params:
            if name not in allowed:
                takes = ", ".join(allowed) or "no parameters"
                raise BadRequest(f"unknown query parameter {name!r}; this endpoint takes: {takes}")
            if len(self.params.getlist(name)) > 1:
                raise BadRequest(f"query parameter {name!r} is given more than once")

    def text(self, name: str) -> str | None:
        value = self.params.get(name)
        if value == "":
            raise BadRequest(f"query parameter {name!r} is empty; leave it out to mean any")
        return value

    def integer(self, name: str, default: int) -> int:
        value = self.params.get(name)
        if value is None:
            return default
        if not value.isascii() or not value.isdigit() or len(value) > 19:
            raise BadRequest(f"query parameter {name!r} must be a non-negative 64-bit integer, got {value!r:.40}")
        return int(value)

    def flag(self, name: str) -> bool:
        value = self.params.get(name, "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise BadRequest(f"query parameter {name!r} must be true or false, got {value!r}")
        return value in ("true", "1")


def _parse_signed(body: bytes, content_type: str) -> SignedTransaction:
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(f"send the transaction as application/json, not {content_type or 'no content type'!r}")
    try:
        signed = SignedTransaction.from_json(loads(body))
        signed.tx.signing_bytes()  # it has a canonical form: no floats, nothing nested absurdly deep
    except (MalformedInput, InvalidTransaction) as exc:
        raise BadRequest(f"not a signed transaction: {exc.message}") from None
    except RecursionError:
        raise BadRequest("not a signed transaction: the JSON is nested too deeply") from None
    return signed


class _Api:
    """The handlers, bound to one ledger."""

    def __init__(self, ledger: EmbeddedLedger, max_body_bytes: int) -> None:
        self.ledger = ledger
        self.max_body_bytes = max_body_bytes

    async def health(self, request: Request) -> Any:
        _Query(request)
        head = await run_in_threadpool(self.ledger.head)
        return {"chain_id": self.ledger.chain_id, "head": head.to_json()}

    async def head(self, request: Request) -> Any:
        _Query(request)
        return (await run_in_threadpool(self.ledger.head)).to_json()

    async def submit(self, request: Request) -> Any:
        _Query(request)
        body = await read_body(request, self.max_body_bytes)
        signed = _parse_signed(body, request.headers.get("content-type", ""))
        return (await run_in_threadpool(self.ledger.submit, signed)).to_json()

    async def account(self, request: Request) -> Any:
        _Query(request)
        return (await run_in_threadpool(self.ledger.account, request.path_params["address"])).to_json()

    async def provider(self, request: Request) -> Any:
        _Query(request)
        return (await run_in_threadpool(self.ledger.provider, request.path_params["address"])).to_json()

    async def machines(self, request: Request) -> Any:
        query = _Query(request, "provider")
        found = await run_in_threadpool(lambda: self.ledger.machines(provider=query.text("provider")))
        return {"machines": [m.to_json() for m in found]}

    async def machine(self, request: Request) -> Any:
        _Query(request)
        return (await run_in_threadpool(self.ledger.machine, request.path_params["machine_id"])).to_json()

    async def offers(self, request: Request) -> Any:
        query = _Query(request, "kind", "owner", "digest", "include_retired")
        kind, owner, digest = query.text("kind"), query.text("owner"), query.text("digest")
        retired = query.flag("include_retired")
        found = await run_in_threadpool(
            lambda: self.ledger.offers(kind=kind, owner=owner, content_digest=digest, include_retired=retired)
        )
        return {"offers": [o.to_json() for o in found]}

    async def offer(self, request: Request) -> Any:
        _Query(request)
        return (await run_in_threadpool(self.ledger.offer, request.path_params["offer_id"])).to_json()

    async def orders(self, request: Request) -> Any:
        query = _Query(request, "owner", "machine", "state")
        owner, machine, state = query.text("owner"), query.text("machine"), query.text("state")
        found = await run_in_threadpool(lambda: self.ledger.orders(owner=owner, machine_id=machine, state=state))
        return {"orders": [o.to_json() for o in found]}

    async def order(self, request: Request) -> Any:
        _Query(request)
        return (await run_in_threadpool(self.ledger.order, request.path_params["order_id"])).to_json()

    def listing(self, what: str, read: Callable[[str], Sequence[JsonRecord]]) -> Handler:
        """A handler listing the records ``read`` returns for the order in the path, under key ``what``."""

        async def handler(request: Request) -> Any:
            _Query(request)
            found = await run_in_threadpool(read, request.path_params["order_id"])
            return {what: [record.to_json() for record in found]}

        return handler

    async def credit(self, request: Request) -> Any:
        _Query(request)
        order_id, user = request.path_params["order_id"], request.path_params["user"]
        return (await run_in_threadpool(self.ledger.credit, order_id, user)).to_json()

    async def block_hash(self, request: Request) -> Any:
        _Query(request)
        text = request.path_params["height"]
        if not text.isascii() or not text.isdigit() or len(text) > 19:
            raise BadRequest(f"a block height is a non-negative 64-bit integer, got {text!r:.40}")
        height = int(text)
        return {"height": height, "hash": await run_in_threadpool(self.ledger.block_hash, height)}

    async def events(self, request: Request) -> Any:
        query = _Query(request, "after", "limit")
        after, limit = query.integer("after", 0), query.integer("limit", 100)
        return (await run_in_threadpool(lambda: self.ledger.events(after=after, limit=limit))).to_json()

    async def blocks(self, request: Request) -> Any:
        query = _Query(request, "start", "limit")
        start, limit = query.integer("start", 1), query.integer("limit", 100)
        return {"blocks": await run_in_threadpool(self.ledger.blocks, start, limit)}


def create_app(
    ledger: EmbeddedLedger, *, max_body_bytes: int = DEFAULT_MAX_BODY, close_on_shutdown: bool = False
) -> Starlette:
    """The ``/v1`` JSON API over ``ledger``; it closes the ledger on shutdown only if told it owns it."""
    api = _Api(ledger, max_body_bytes)
    get = ["GET"]
    routes = [
        Route("/v1/health", _json_endpoint(api.health), methods=get),
        Route("/v1/head", _json_endpoint(api.head), methods=get),
        Route("/v1/transactions", _json_endpoint(api.submit, status=201), methods=["POST"]),
        Route("/v1/accounts/{address}", _json_endpoint(api.account), methods=get),
        Route("/v1/providers/{address}", _json_endpoint(api.provider), methods=get),
        Route("/v1/machines", _json_endpoint(api.machines), methods=get),
        Route("/v1/machines/{machine_id}", _json_endpoint(api.machine), methods=get),
        Route("/v1/offers", _json_endpoint(api.offers), methods=get),
        Route("/v1/offers/{offer_id}", _json_endpoint(api.offer), methods=get),
        Route("/v1/orders", _json_endpoint(api.orders), methods=get),
        Route("/v1/orders/{order_id}", _json_endpoint(api.order), methods=get),
        *(
            Route(f"/v1/orders/{{order_id}}/{what}", _json_endpoint(api.listing(what, read)), methods=get)
            for what, read in (
                ("grants", ledger.grants),
                ("refusals", ledger.refusals),
                ("checkpoints", ledger.checkpoints),
                ("resume-grants", ledger.resume_grants),
                ("endpoints", ledger.endpoints),
                ("disputes", ledger.disputes),
                ("timeouts", ledger.timeouts),
            )
        ),
        Route("/v1/orders/{order_id}/credits/{user}", _json_endpoint(api.credit), methods=get),
        Route("/v1/events", _json_endpoint(api.events), methods=get),
        Route("/v1/blocks", _json_endpoint(api.blocks), methods=get),
        Route("/v1/blocks/{height}/hash", _json_endpoint(api.block_hash), methods=get),
    ]
    lifespan = _closing(ledger) if close_on_shutdown else None
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=lifespan)


def _closing(ledger: EmbeddedLedger) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """A lifespan that closes the ledger (checkpointing its WAL) when the server shuts down."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(ledger.close)

    return lifespan


def serve(
    db_path: Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    log_level: str = "info",
) -> None:
    """Serve the ledger file at ``db_path`` until SIGINT/SIGTERM, then close it cleanly.

    Like uvicorn, the process then re-raises the signal, so its exit status says it was stopped by one.
    """
    with EmbeddedLedger.open(db_path) as ledger:
        app = create_app(ledger, max_body_bytes=max_body_bytes, close_on_shutdown=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level)

"""The gateway's HTTP face: OpenAI's ``/v1`` API, the sealed entry, receipts, and the web chat.

Every error is an OpenAI-style body with the right status (401 key, 402 credit, 400 request, 404 model, 503 no
replicas); nothing unexpected leaks a traceback. Streaming answers are OpenAI ``chat.completion.chunk`` events;
the last chunk before ``[DONE]`` has no choices and carries the usage and the ``cloister`` verdict (receipt id,
mode, agreement, and the majority's text as ``content`` if the streamed answer turned out not to be it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from anyio import to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cloister.errors import BadRequest, CloisterError, ReceiptNotFound
from cloister.gateway import chat
from cloister.gateway.auth import Caller
from cloister.gateway.http import error_body, error_response, json_object, unexpected_error_response
from cloister.gateway.service import Gateway

log = logging.getLogger(__name__)
STATIC = Path(str(resources.files("cloister.gateway") / "static"))
DEFAULT_PORT = 8650
Handler = Callable[[Request], Awaitable[Response]]


def _endpoint(handler: Handler) -> Handler:
    """Typed errors become OpenAI error bodies; anything else a 500 that leaks nothing."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except CloisterError as exc:
            return error_response(exc)
        except Exception:
            return unexpected_error_response(request)

    return endpoint


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error = BadRequest(
        f"no endpoint {request.method} {request.url.path}; the API is OpenAI's under /v1 (see /v1/models)",
        path=request.url.path,
    )
    return error_response(error, status=status)


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class _Api:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._running: set[asyncio.Task[None]] = set()

    async def _caller(self, request: Request) -> Caller:
        return await to_thread.run_sync(self.gateway.keys.check, request.headers.get("authorization"))

    async def health(self, request: Request) -> Response:
        deployments = self.gateway.directory.deployments()
        return JSONResponse({"status": "ok", "gateway": self.gateway.address, "deployments": len(deployments)})

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "chat.html", media_type="text/html")

    async def models(self, request: Request) -> Response:
        await self._caller(request)
        directory = self.gateway.directory
        data = [
            {
                "id": d.order_id,
                "object": "model",
                "created": d.created_at,
                "owned_by": d.owner,
                "cloister": {
                    "replicas": len(directory.live(d)),
                    "price_per_1k_tokens": d.price_per_1k_tokens,
                    "consensus": None if d.default_mode is None else str(d.default_mode),
                },
            }
            for d in directory.deployments()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def completions(self, request: Request) -> Response:
        caller = await self._caller(request)
        body = await json_object(request, self.gateway.config.max_body_bytes)
        prepared = chat.plain_request(self.gateway.directory, caller, body, request.headers)
        if prepared.stream:
            return await self._stream(prepared)
        result = await chat.run(self.gateway, prepared)
        completion = dict(result.outcome.answer.response or {})
        completion["model"] = prepared.deployment.order_id
        completion["cloister"] = result.extension()
        return JSONResponse(completion, headers=result.headers())

    async def sealed(self, request: Request) -> Response:
        caller = await self._caller(request)
        body = await json_object(request, self.gateway.config.max_sealed_bytes)
        prepared = chat.sealed_request(self.gateway.directory, caller, body, request.headers)
        result = await chat.run(self.gateway, prepared)
        answer = result.outcome.answer
        return JSONResponse(
            {
                "object": "cloister.sealed_response",
                "model": prepared.deployment.order_id,
                "request_digest": answer.commitment.request_digest,
                "sealed_response": answer.sealed_response,
                "cloister": result.extension(),
            },
            headers=result.headers(),
        )

    async def _stream(self, prepared: chat.Request) -> Response:
        """Start the run; answer an HTTP error if it fails before the first chunk, else stream it."""
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def sink(chunk: dict[str, Any]) -> None:
            chunk.pop("cloister", None)
            chunk["model"] = prepared.deployment.order_id
            await queue.put(("chunk", chunk))

        async def work() -> None:
            try:
                await queue.put(("done", await chat.run(self.gateway, prepared, sink)))
            except CloisterError as exc:
                await queue.put(("error", exc))
            except Exception:
                log.exception("unexpected error streaming %s", prepared.receipt_id)
                await queue.put(("error", CloisterError("the gateway hit an unexpected error; retry the request")))

        task = asyncio.get_running_loop().create_task(work())  # runs to the end even if the client leaves
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        first = await queue.get()
        if first[0] == "error":
            return error_response(first[1])
        headers = {
            "X-Cloister-Receipt": prepared.receipt_id,
            "X-Cloister-Consensus": str(prepared.mode),
            "Cache-Control": "no-cache",
        }
        return StreamingResponse(_events(first, queue), media_type="text/event-stream", headers=headers)

    async def receipt(self, request: Request) -> Response:
        data = await self._stored(request)
        return Response(data, media_type="application/json")

    async def verify(self, request: Request) -> Response:
        data = await self._stored(request)
        return JSONResponse(await to_thread.run_sync(self.gateway.verify_stored, data))

    async def _stored(self, request: Request) -> bytes:
        receipt_id = request.path_params["receipt_id"]
        data = await to_thread.run_sync(self.gateway.store.receipt, receipt_id)
        if data is None:
            raise ReceiptNotFound(f"this gateway issued no receipt {receipt_id!r:.40}; check the X-Cloister-Receipt id")
        return data


async def _events(first: tuple[str, Any], queue: asyncio.Queue[tuple[str, Any]]) -> AsyncIterator[bytes]:
    """The chunks, then the verdict chunk and ``[DONE]`` (or an OpenAI error event if the run failed)."""
    item, chunk_id = first, None
    while True:
        kind, value = item
        if kind == "chunk":
            chunk_id = chunk_id or value.get("id")
            yield _sse(value)
        elif kind == "error":
            yield _sse(error_body(value))
            return
        else:
            yield _sse(_final_chunk(value, chunk_id))
            yield b"data: [DONE]\n\n"
            return
        item = await queue.get()


def _final_chunk(result: chat.Result, chunk_id: str | None) -> dict[str, Any]:
    outcome = result.outcome
    prompt, completion = result.tokens
    extension = result.extension()
    if outcome.streamed is None or outcome.streamed.commitment.output_digest != outcome.verdict.output_digest:
        extension["content"] = outcome.answer.content  # what the majority answered, if not what was streamed
    return {
        "id": chunk_id or f"chatcmpl-{result.receipt.receipt_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": result.request.deployment.order_id,
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "cloister": extension,
    }


def create_app(gateway: Gateway, *, run_loops: bool = True) -> Starlette:
    """The gateway's app; its lifespan runs the maintenance and settlement loops (unless ``run_loops`` is off)."""
    api = _Api(gateway)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.maintain()
        loops = asyncio.get_running_loop().create_task(gateway.run_loops()) if run_loops else None
        try:
            yield
        finally:
            if loops is not None:
                loops.cancel()
                await asyncio.gather(loops, return_exceptions=True)
            await gateway.aclose()

    routes = [
        Route("/", _endpoint(api.page), methods=["GET"]),
        Route("/health", _endpoint(api.health), methods=["GET"]),
        Route("/v1/models", _endpoint(api.models), methods=["GET"]),
        Route("/v1/chat/completions", _endpoint(api.completions), methods=["POST"]),
        Route("/cloister/v1/sealed/chat/completions", _endpoint(api.sealed), methods=["POST"]),
        Route("/v1/receipts/{receipt_id}", _endpoint(api.receipt), methods=["GET"]),
        Route("/v1/receipts/{receipt_id}/verify", _endpoint(api.verify), methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _not_found}, lifespan=lifespan)


def serve(gateway: Gateway, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; on the way out the lifespan settles the usage metered so far."""
    uvicorn.run(create_app(gateway), host=host, port=port, log_level=log_level)

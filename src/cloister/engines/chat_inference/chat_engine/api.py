"""The OpenAI-compatible HTTP face of the engine: ``/health``, ``/v1/models``, ``/v1/chat/completions``.

Requests are checked by :func:`cloister.consensus.requests.normalize_request`, the one parser the replicas commit
with, so what the engine decodes is exactly what gets hashed. Every answer carries the extension field
``"cloister": {"token_ids": [...], "prompt_tokens": n}`` (in the last chunk when streamed). ``/v1/detokenize``
turns token ids back into text, as serving engines commonly offer.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cloister.consensus.requests import NormalizedRequest, normalize_request
from cloister.crypto.canonical import loads
from cloister.errors import BadRequest, CloisterError, InvalidRequest, MalformedInput, PayloadTooLarge

from .decode import Completion, Decoding
from .worker import Worker

MAX_BODY = 1 << 20
MAX_DETOKENIZE = 8192
log = logging.getLogger("chat_engine")


def error_response(error: CloisterError, status: int | None = None) -> JSONResponse:
    """OpenAI's error body, so OpenAI clients show the message."""
    kind = "invalid_request_error" if error.http_status < 500 else "server_error"
    param = error.details.get("param")
    body = {"error": {"message": error.message, "type": kind, "param": param, "code": error.code}}
    return JSONResponse(body, status_code=status or error.http_status)


async def read_json(request: Request, limit: int = MAX_BODY) -> Any:
    """The body as JSON, refused once it is known to exceed ``limit`` bytes."""
    too_large = f"the request body is larger than {limit} bytes; send a shorter conversation"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(too_large, limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(too_large, limit=limit)
    try:
        return loads(bytes(body))
    except MalformedInput as exc:
        raise BadRequest(f"the request body is not JSON: {exc.message}") from None


def decoding_of(request: NormalizedRequest) -> Decoding:
    return Decoding(
        max_tokens=request.max_tokens,
        temperature=float(request.temperature),
        top_p=float(request.top_p),
        seed=request.seed,
        stop=request.stop,
    )


def extension(completion: Completion) -> dict[str, Any]:
    return {"token_ids": list(completion.token_ids), "prompt_tokens": completion.prompt_tokens}


def usage(completion: Completion) -> dict[str, int]:
    done = len(completion.token_ids)
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": done,
        "total_tokens": completion.prompt_tokens + done,
    }


class _Api:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.model_id = worker.loaded.model_id

    async def health(self, request: Request) -> Response:
        loaded = self.worker.loaded
        return JSONResponse(
            {"status": "ok", "model": self.model_id, "context": loaded.context, "vocab_size": loaded.vocab_size}
        )

    async def models(self, request: Request) -> Response:
        card = {"id": self.model_id, "object": "model", "created": 0, "owned_by": "cloister"}
        return JSONResponse({"object": "list", "data": [card]})

    async def detokenize(self, request: Request) -> Response:
        body = await read_json(request)
        ids = body.get("token_ids") if isinstance(body, dict) else None
        vocab = self.worker.loaded.vocab_size
        if not (
            isinstance(ids, list)
            and len(ids) <= MAX_DETOKENIZE
            and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in ids)
        ):
            raise InvalidRequest(
                f"token_ids must be a list of at most {MAX_DETOKENIZE} token ids below {vocab}", param="token_ids"
            )
        text = self.worker.loaded.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return JSONResponse({"text": str(text)})

    async def chat(self, request: Request) -> Response:
        normalized = normalize_request(await read_json(request))
        messages = [message.to_json() for message in normalized.messages]
        items = self.worker.run(messages, decoding_of(normalized))
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.model_id}
        if not normalized.stream:
            async with aclosing(items):
                completion = [item async for item in items][-1]
            assert isinstance(completion, Completion)
            return JSONResponse(_completion(meta, completion))
        first = await anext(items)  # errors (context too long) still get a JSON answer, not a broken stream
        return StreamingResponse(_sse(meta, first, items), media_type="text/event-stream")


def _completion(meta: dict[str, Any], completion: Completion) -> dict[str, Any]:
    message = {"role": "assistant", "content": completion.text}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": completion.finish_reason}
    return {
        **meta,
        "object": "chat.completion",
        "choices": [choice],
        "usage": usage(completion),
        "cloister": extension(completion),
    }


def _chunk(meta: dict[str, Any], delta: dict[str, str], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {**meta, "object": "chat.completion.chunk", "choices": [choice], **extra}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


async def _sse(
    meta: dict[str, Any], first: str | Completion, rest: AsyncGenerator[str | Completion]
) -> AsyncIterator[bytes]:
    async with aclosing(rest):
        yield _chunk(meta, {"role": "assistant", "content": ""})
        item = first
        while isinstance(item, str):
            yield _chunk(meta, {"content": item})
            item = await anext(rest)
        yield _chunk(meta, {}, item.finish_reason, usage=usage(item), cloister=extension(item))
        yield b"data: [DONE]\n\n"


def _endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except CloisterError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unexpected error serving %s", request.url.path)
            return error_response(CloisterError("the engine hit an unexpected error; see its log"), 500)

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(BadRequest(f"no endpoint {request.method} {request.url.path}"), status)


def create_app(worker: Worker) -> Starlette:
    api = _Api(worker)
    return Starlette(
        routes=[
            Route("/health", _endpoint(api.health)),
            Route("/v1/models", _endpoint(api.models)),
            Route("/v1/chat/completions", _endpoint(api.chat), methods=["POST"]),
            Route("/v1/detokenize", _endpoint(api.detokenize), methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error},
    )

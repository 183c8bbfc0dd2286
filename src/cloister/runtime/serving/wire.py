"""HTTP plumbing of the replica: OpenAI error bodies, bounded JSON bodies, server-sent events.

Error bodies follow OpenAI (``{"error": {"message", "type", "param", "code"}}``) and carry the Cloister error code,
so OpenAI clients show the message and :class:`cloister.net.HttpClient` raises the very class the replica raised.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from cloister.crypto.canonical import loads
from cloister.errors import BadRequest, CloisterError, MalformedInput, ReplicaError
from cloister.net import read_body

DONE = b"data: [DONE]\n\n"


def error_body(error: CloisterError) -> dict[str, Any]:
    kind = "invalid_request_error" if error.http_status < 500 else "server_error"
    return {"error": {"message": error.message, "type": kind, "param": error.details.get("param"), "code": error.code}}


def error_response(error: CloisterError, status: int | None = None) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=status or error.http_status)


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON (duplicate keys and deep nesting refused), at most ``limit`` bytes of it."""
    body = await read_body(request, limit)
    try:
        return loads(body)
    except MalformedInput as exc:
        raise BadRequest(f"the request body is not JSON: {exc.message}") from None


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event whose data is ``data`` as JSON on one line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[Any]:
    """The JSON ``data:`` payloads of an event stream, up to ``[DONE]``; anything else there is skipped."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            yield loads(payload)
        except MalformedInput as exc:
            raise ReplicaError(f"the engine streamed a line that is not JSON: {exc.message}") from None

"""The gateway's wire edge: OpenAI-style error bodies and strictly parsed JSON requests.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}``; ``code`` is the Cloister error code, so
:class:`cloister.net.HttpClient` still rebuilds the typed error from the same body.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from cloister.crypto.canonical import loads
from cloister.errors import BadRequest, CloisterError, MalformedInput
from cloister.net import read_body

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 16
"""A chat request nests four levels deep; anything much deeper is an attack on the parser, not a request."""

_TYPES = {401: "authentication_error", 402: "insufficient_quota", 403: "permission_error", 404: "not_found_error"}


def error_type(status: int) -> str:
    """The OpenAI ``error.type`` for an HTTP status."""
    if status >= 500:
        return "server_error"
    return _TYPES.get(status, "invalid_request_error")


def error_body(exc: CloisterError, status: int | None = None) -> dict[str, Any]:
    param = exc.details.get("param")
    return {
        "error": {
            "message": exc.message,
            "type": error_type(status or exc.http_status),
            "param": param if isinstance(param, str) else None,
            "code": exc.code,
        }
    }


def error_response(exc: CloisterError, *, status: int | None = None) -> JSONResponse:
    return JSONResponse(error_body(exc, status), status_code=status or exc.http_status)


def unexpected_error_response(request: Request) -> JSONResponse:
    """What a caller sees for a bug: a 500 that leaks nothing; the traceback goes to the gateway's log."""
    log.exception("unexpected error serving %s %s", request.method, request.url.path)
    error = CloisterError(
        "the gateway hit an unexpected error (logged on the gateway); retry, and report it if it repeats"
    )
    return error_response(error, status=500)


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object: size-limited, depth-limited, no repeated keys; else :class:`BadRequest`."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(f"send the request as application/json, not {content_type or 'no content type'!r}")
    body = await read_body(request, limit)
    try:
        value = loads(body, max_depth=MAX_JSON_DEPTH)
    except MalformedInput as exc:
        raise BadRequest(f"the body is not valid JSON: {exc.message}") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value

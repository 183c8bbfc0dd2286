"""The one HTTP client wrapper of Cloister.

Every call a Cloister client makes to a Cloister server goes through :class:`HttpClient`, so transport
failures and error bodies become the same typed errors everywhere: a server's error body is turned back into
the class the server raised, and an unreachable server becomes :class:`ServiceUnavailable`.
On the server side, :func:`read_body` is the one size-limited read of a request body.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from cloister.errors import BadRequest, CloisterError, PayloadTooLarge, RemoteError, ServiceUnavailable

if TYPE_CHECKING:
    from starlette.requests import Request

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for a connection or a response before giving up."""


class HttpClient:
    """JSON over HTTP to one server; safe to share between threads (httpx pools the connections)."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout)

    def get_json(self, path: str, params: dict[str, str | int | bool] | None = None) -> Any:
        """GET ``path`` and return the decoded JSON body; raise the server's typed error on failure."""
        return self._send("GET", path, params=params)

    def post_json(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``path`` and return the decoded JSON answer."""
        return self._send("POST", path, json=body)

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(
                f"could not reach {url} ({type(exc).__name__}: {exc}); check the server is running "
                "(`cloister devnet status`) and the URL is right",
                url=url,
            ) from None
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RemoteError(
                f"{url} answered HTTP {response.status_code} with a body that is not JSON; "
                "is this URL a Cloister server?",
                url=url,
                status=response.status_code,
            ) from None
        if response.is_error:
            raise CloisterError.from_json(body, fallback_status=response.status_code)
        return body

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def read_body(request: Request, limit: int) -> bytes:
    """A server's request body, refused as soon as it is known to exceed ``limit`` (declared or counted)."""
    declared = request.headers.get("content-length")
    too_large = f"the request body is larger than this server accepts ({limit} bytes); send a smaller one"
    if declared is not None:
        if not declared.isascii() or not declared.isdigit():
            raise BadRequest(f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(too_large, limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(too_large, limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)

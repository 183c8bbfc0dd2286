"""The one HTTP client wrapper of Cloister.

Every call a Cloister client makes to a Cloister server goes through :class:`HttpClient`, so transport
failures and error bodies become the same typed errors everywhere: a server's error body is turned back into
the class the server raised, and an unreachable server becomes :class:`ServiceUnavailable`.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import httpx

from cloister.errors import CloisterError, RemoteError, ServiceUnavailable

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

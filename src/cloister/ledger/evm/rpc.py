"""JSON-RPC to an Ethereum node through web3.py's HTTP provider, surviving the node's restarts.

A connection failure is retried for ``retry_for`` seconds (a restarting anvil, a flaky link), then becomes
:class:`ServiceUnavailable`. A call that reverts raises :class:`Reverted` with the revert data, which the ledger
decodes into the typed Cloister error; any other node error is a :class:`RemoteError`.
"""

from __future__ import annotations

import time
from typing import Any

import requests
from web3 import HTTPProvider

from cloister.errors import RemoteError, ServiceUnavailable


class Reverted(Exception):
    """The EVM reverted a call or a transaction; ``data`` is the revert data (empty if the node gave none)."""

    def __init__(self, data: bytes, message: str) -> None:
        super().__init__(message)
        self.data = data
        self.message = message


class Rpc:
    """One node's JSON-RPC endpoint; safe to share between threads."""

    def __init__(self, url: str, *, timeout: float = 10.0, retry_for: float = 15.0) -> None:
        self.url = url
        self.retry_for = retry_for
        self._provider = HTTPProvider(url, request_kwargs={"timeout": timeout})

    def request(self, method: str, params: list[Any]) -> Any:
        deadline = time.monotonic() + self.retry_for
        pause = 0.05
        while True:
            try:
                response = self._provider.make_request(method, params)
                break
            except (OSError, requests.RequestException) as exc:
                if time.monotonic() + pause > deadline:
                    raise ServiceUnavailable(
                        f"the Ethereum node at {self.url} did not answer {method} for {self.retry_for:.0f}s "
                        f"({type(exc).__name__}); check it is running (`cloister devnet status`) and the URL",
                        url=self.url,
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
        error = response.get("error")
        if error is None:
            return response.get("result")
        message = str(error.get("message", error))
        data = error.get("data")
        if isinstance(data, str) and data.startswith("0x") and "revert" in message.lower():
            raise Reverted(bytes.fromhex(data[2:]), message)
        if "revert" in message.lower():
            raise Reverted(b"", message)
        raise RemoteError(f"the Ethereum node at {self.url} refused {method}: {message}", url=self.url)

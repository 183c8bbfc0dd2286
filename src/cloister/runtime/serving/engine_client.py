"""The replica's side of the engine's local HTTP API (``chat_inference`` on 127.0.0.1).

The engine runs sandboxed and is not trusted to be well-formed: its answers are checked for the fields the
commitment is built from (text, token ids, prompt tokens) before anything is signed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx

from cloister.errors import ReplicaError, ServiceUnavailable
from cloister.runtime.serving.wire import sse_data

CONNECT_TIMEOUT = 5.0


class EngineRefused(Exception):
    """The engine answered with an (OpenAI) error body, which the replica passes on as is: the engine said why."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"the engine answered HTTP {status}")
        self.status, self.body = status, body


@dataclass(frozen=True)
class Answer:
    """What a commitment is built from: the answer text, every generated token id and the prompt's length."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: str


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def answer_of(completion: Any, text: str | None = None) -> Answer:
    """Read the answer out of a ``chat.completion`` (or, with ``text``, out of the last streamed chunk)."""
    try:
        choice = completion["choices"][0]
        content = text if text is not None else choice["message"]["content"]
        extension = completion["cloister"]
        ids, prompt, finish = extension["token_ids"], extension["prompt_tokens"], choice["finish_reason"]
    except (KeyError, IndexError, TypeError):
        raise ReplicaError("the engine's answer lacks its choices or its cloister token ids") from None
    if not isinstance(content, str) or not isinstance(ids, list) or not all(map(_int, ids)) or not _int(prompt):
        raise ReplicaError("the engine's answer has ill-typed text, token ids or prompt token count")
    return Answer(content, tuple(ids), prompt, str(finish))


class EngineClient:
    """Async JSON and event-stream calls to one engine; decoding may take minutes, so reads do not time out."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT))

    def _unreachable(self, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"the replica's engine at {self.base_url} does not answer ({type(exc).__name__}); the replica is "
            "restarting or broken, send the request to another one"
        )

    async def _post(self, path: str, body: Any) -> Any:
        try:
            response = await self._client.post(path, json=body)
            data = response.json()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        except ValueError:
            raise ReplicaError(f"the engine answered {path} with a body that is not JSON") from None
        if response.is_error:
            raise EngineRefused(response.status_code, data)
        return data

    async def health(self) -> Any:
        try:
            return (await self._client.get("/health")).json()
        except (httpx.TransportError, ValueError) as exc:
            raise self._unreachable(exc) from None

    async def complete(self, request: dict[str, Any]) -> Any:
        return await self._post("/v1/chat/completions", {**request, "stream": False})

    async def detokenize(self, token_ids: tuple[int, ...]) -> str:
        text = (await self._post("/v1/detokenize", {"token_ids": list(token_ids)})).get("text")
        if not isinstance(text, str):
            raise ReplicaError("the engine's detokenize answer has no text")
        return text

    async def stream(self, request: dict[str, Any]) -> AsyncGenerator[Any]:
        """The engine's ``chat.completion.chunk`` objects; an error before the first one raises."""
        try:
            async with self._client.stream("POST", "/v1/chat/completions", json={**request, "stream": True}) as resp:
                if resp.is_error:
                    try:
                        body = json.loads(await resp.aread())
                    except ValueError:
                        raise ReplicaError(f"the engine answered HTTP {resp.status_code} without a JSON body") from None
                    raise EngineRefused(resp.status_code, body)
                async for chunk in sse_data(resp.aiter_lines()):
                    yield chunk
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    async def aclose(self) -> None:
        await self._client.aclose()

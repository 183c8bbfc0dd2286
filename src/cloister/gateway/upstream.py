"""Talking to one replica (``cloister.runtime.serving``): health, and executing a request until it commits.

Every answer is checked before it counts: the commitment must be signed by the machine's attested loader key,
name the right deployment, machine, role, request and decoding parameters, and the text returned must be the
text committed to. A replica that fails is classified, because each failure is handled differently: ``down``
(unreachable: route around it), ``timeout`` (connected but no commitment in time: slashed), ``invalid`` (it
answered something that does not check out), ``refused`` (it said the request itself is bad).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import httpx

from cloister.consensus.commitment import Commitment, Role, SignedCommitment, content_digest
from cloister.crypto.canonical import loads
from cloister.errors import CloisterError

FailureKind = Literal["down", "timeout", "invalid", "refused"]
ChunkSink = Callable[[dict[str, Any]], Awaitable[None]]
MAX_ANSWER = 8 << 20
"""Largest replica answer the gateway reads, in bytes."""


class ReplicaFailure(Exception):
    """Why one replica did not contribute an answer; internal to the gateway (callers see typed errors)."""

    def __init__(self, kind: FailureKind, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        """For a refusal: the request field the replica named."""


@dataclass(frozen=True)
class Replica:
    """One registered endpoint of a deployment and the machine facts its commitments are checked against."""

    machine_id: str
    url: str
    loader_signing_key: bytes
    tcb_id: str


@dataclass(frozen=True)
class Expected:
    """What every commitment to this request must say (``None``: learnt from the answers, for sealed requests)."""

    deployment_id: str
    deployment_digest: str
    request_digest: str | None
    params_digest: str | None


@dataclass(frozen=True)
class Answer:
    """A replica's checked answer: the commitment and what it returned (text, or the sealed answer)."""

    replica: Replica
    signed: SignedCommitment
    content: str | None
    response: dict[str, Any] | None
    sealed_response: str | None

    @property
    def commitment(self) -> Commitment:
        return self.signed.commitment


class Upstream:
    """An HTTP client shared by every request to every replica."""

    def __init__(self, *, connect_timeout: float = 5.0) -> None:
        timeout = httpx.Timeout(None, connect=connect_timeout)
        self._client = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=256))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def health(self, replica: Replica, timeout: float) -> dict[str, Any]:
        """The replica's ``/health`` body if it says it serves this machine; :class:`ReplicaFailure` otherwise."""
        try:
            response = await self._client.get(f"{replica.url}/health", timeout=timeout)
            body = response.json()
        except (httpx.HTTPError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ReplicaFailure("down", f"{replica.url}/health: {type(exc).__name__}") from None
        if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "ok":
            raise ReplicaFailure("down", f"{replica.url}/health answered HTTP {response.status_code}")
        if body.get("machine_id") != replica.machine_id:
            raise ReplicaFailure("invalid", f"{replica.url} says it is {body.get('machine_id')!r:.80}")
        return body

    async def execute(
        self,
        replica: Replica,
        body: dict[str, Any],
        role: Role,
        expected: Expected,
        *,
        timeout: float,
        created_at: int,
        sink: ChunkSink | None = None,
    ) -> Answer:
        """Run ``body`` (``{"request": …}`` or ``{"sealed": …}``) on the replica; stream chunks to ``sink``.

        Only the replica whose answer the user watches streams; the others answer whole (the request digest
        leaves ``stream`` out, so both commit to the same thing).
        """
        payload = {**body, "role": role, "created_at": created_at}
        if "request" in payload:
            payload["request"] = {**payload["request"], "stream": sink is not None}
        try:
            async with asyncio.timeout(timeout):
                if sink is not None:
                    return await self._stream(replica, payload, role, expected, sink)
                return await self._whole(replica, payload, role, expected)
        except TimeoutError:
            raise ReplicaFailure("timeout", f"machine {replica.machine_id} did not commit within {timeout}s") from None
        except httpx.HTTPError as exc:
            raise ReplicaFailure("down", f"machine {replica.machine_id}: {type(exc).__name__}: {exc}") from None

    async def _whole(self, replica: Replica, payload: dict[str, Any], role: Role, expected: Expected) -> Answer:
        async with self._client.stream("POST", f"{replica.url}/cloister/v1/execute", json=payload) as response:
            raw = await _read_limited(response)
        if response.status_code != 200:
            _failed_status(response.status_code, raw, replica)
        data = _json(raw, replica)
        if not isinstance(data, dict):
            raise ReplicaFailure("invalid", f"machine {replica.machine_id} answered a non-object")
        signed = _commitment(data.get("commitment"), replica, role, expected)
        if "sealed" in payload:
            sealed = data.get("sealed_response")
            _check_base64(sealed, replica)
            return Answer(replica, signed, None, None, sealed)
        completion, text = _completion(data.get("response"), replica)
        _check_content(text, signed, replica)
        return Answer(replica, signed, text, completion, None)

    async def _stream(
        self, replica: Replica, payload: dict[str, Any], role: Role, expected: Expected, sink: ChunkSink
    ) -> Answer:
        parts: list[str] = []
        signed: SignedCommitment | None = None
        async with self._client.stream("POST", f"{replica.url}/cloister/v1/execute", json=payload) as response:
            if response.status_code != 200:
                _failed_status(response.status_code, await _read_limited(response), replica)
            async for event, data in _sse(response, replica):
                if event == "commitment":
                    signed = _commitment(_json(data.encode(), replica), replica, role, expected)
                elif data == "[DONE]":
                    break
                elif signed is None:
                    chunk = _json(data.encode(), replica)
                    parts.append(_delta_text(chunk, replica))
                    await sink(chunk)
        if signed is None:
            raise ReplicaFailure("invalid", f"machine {replica.machine_id} ended its stream without a commitment")
        text = "".join(parts)
        _check_content(text, signed, replica)
        return Answer(replica, signed, text, None, None)


async def _read_limited(response: httpx.Response) -> bytes:
    """The body, or as much of it as shows it is too large (a hostile replica could send gigabytes)."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > MAX_ANSWER:
            break
    return bytes(data)


async def _sse(response: httpx.Response, replica: Replica) -> AsyncIterator[tuple[str, str]]:
    """``(event name, data)`` of each server-sent event; ``message`` when unnamed."""
    event, data, size = "message", list[str](), 0
    async for line in response.aiter_lines():
        size += len(line)
        if size > MAX_ANSWER:
            raise ReplicaFailure("invalid", f"machine {replica.machine_id} streamed more than {MAX_ANSWER} bytes")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield event, "\n".join(data)


def _json(raw: bytes, replica: Replica) -> Any:
    if len(raw) > MAX_ANSWER:
        raise ReplicaFailure("invalid", f"machine {replica.machine_id} answered more than {MAX_ANSWER} bytes")
    try:
        return loads(raw)
    except CloisterError:
        raise ReplicaFailure("invalid", f"machine {replica.machine_id} answered something that is not JSON") from None


def _failed_status(status: int, raw: bytes, replica: Replica) -> NoReturn:
    """A replica that answered with an error: it refused the request (400/413, OpenAI error body), or it cannot
    serve (5xx: its engine is gone or broken), or it answered something else."""
    try:
        data = loads(raw)
    except CloisterError:
        data = None
    if status in (400, 413) and isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = data["error"]
        param = error.get("param")
        raise ReplicaFailure(
            "refused", str(error.get("message", ""))[:500], param=param if isinstance(param, str) else None
        )
    kind: FailureKind = "down" if status >= 500 else "invalid"
    raise ReplicaFailure(kind, f"machine {replica.machine_id} answered HTTP {status}")


def _commitment(data: Any, replica: Replica, role: Role, expected: Expected) -> SignedCommitment:
    try:
        signed = SignedCommitment.from_json(data)
        commitment = signed.verify(replica.loader_signing_key)
    except CloisterError as exc:
        raise ReplicaFailure("invalid", f"machine {replica.machine_id}'s commitment: {exc.message}") from None
    wanted = {
        "deployment_id": expected.deployment_id,
        "machine_id": replica.machine_id,
        "role": role,
        "request_digest": expected.request_digest or commitment.request_digest,
        "deployment_digest": expected.deployment_digest,
        "params_digest": expected.params_digest or commitment.params_digest,
    }
    for name, value in wanted.items():
        if getattr(commitment, name) != value:
            raise ReplicaFailure(
                "invalid", f"machine {replica.machine_id} committed to {name} {getattr(commitment, name)!r:.80}"
            )
    return signed


def _completion(completion: Any, replica: Replica) -> tuple[dict[str, Any], str]:
    """The chat completion and its answer text."""
    try:
        text = completion["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        text = None
    if not isinstance(completion, dict) or not isinstance(text, str):
        raise ReplicaFailure("invalid", f"machine {replica.machine_id} answered without a chat completion")
    return completion, text


def _delta_text(chunk: Any, replica: Replica) -> str:
    try:
        choices = chunk["choices"]
        if not choices:
            return ""
        text = choices[0].get("delta", {}).get("content") or ""
    except (KeyError, TypeError, AttributeError):
        text = None
    if not isinstance(text, str):
        raise ReplicaFailure("invalid", f"machine {replica.machine_id} streamed a malformed chunk")
    return text


def _check_content(text: str, signed: SignedCommitment, replica: Replica) -> None:
    try:
        matches = content_digest(text) == signed.commitment.content_digest
    except CloisterError:
        matches = False
    if not matches:
        raise ReplicaFailure("invalid", f"machine {replica.machine_id} returned other text than it committed to")


def _check_base64(value: Any, replica: Replica) -> None:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ReplicaFailure("invalid", f"machine {replica.machine_id} answered without a sealed response") from None

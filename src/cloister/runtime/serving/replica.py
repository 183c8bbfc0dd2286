"""The replica server: what the gateway talks to, inside the TEE, in front of the sandboxed engine.

It normalizes each request (the one form replicas hash), opens sealed requests with the deployment key, forwards
the plaintext to the engine on 127.0.0.1, and signs a :class:`~cloister.consensus.commitment.Commitment` to the
generated token ids and answer text with the attested loader key. The engine never sees sealed bytes nor keys;
the gateway never sees a sealed request's prompt or answer. Fault modes exist for demos and tests:
``wrong-output`` perturbs the last generated token id (the text is decoded from the perturbed ids) before
committing, ``silent`` never answers an execution.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cloister.consensus.commitment import (
    ROLES,
    Commitment,
    Role,
    SignedCommitment,
    content_digest,
    deployment_digest,
    output_digest,
    sign_commitment,
)
from cloister.consensus.requests import NormalizedRequest, normalize_request
from cloister.consensus.sealing import MAX_SEALED, open_request, seal_response
from cloister.consensus.wire import check_count
from cloister.crypto.identity import Identity
from cloister.errors import (
    BadRequest,
    CloisterError,
    ConfigError,
    CryptoError,
    InvalidRequest,
    ReplicaError,
    ServiceUnavailable,
)
from cloister.ledger.protocol import LedgerReader
from cloister.runtime.serving.engine_client import Answer, EngineClient, EngineRefused, answer_of
from cloister.runtime.serving.vault_share import JOIN_PATH, deployment_key, parse_join_request, share_vault
from cloister.runtime.serving.wire import DONE, error_response, read_json, sse
from cloister.runtime.vault import Vault

Fault = Literal["none", "wrong-output", "silent"]
FAULTS: Final[tuple[Fault, ...]] = ("none", "wrong-output", "silent")
EXECUTE_PATH = "/cloister/v1/execute"
MAX_BODY = 2 * MAX_SEALED  # a sealed request as base64 plus its envelope
_ENVELOPES = ({"request", "role", "created_at"}, {"sealed", "role", "created_at"})
log = logging.getLogger("cloister.replica")


@dataclass(frozen=True)
class Deployment:
    """What a replica serves: the inference order and the digests of its model, adapters (in order) and engine."""

    order_id: str
    model_digest: str
    adapter_digests: tuple[str, ...]
    engine_digest: str

    @property
    def digest(self) -> str:
        return deployment_digest(self.order_id, self.model_digest, self.adapter_digests, self.engine_digest)


@dataclass(frozen=True)
class _Execution:
    """One parsed ``execute`` call: the request in normal form, and for sealed ones the client's response key."""

    request: NormalizedRequest
    role: Role
    created_at: int
    response_key: bytes | None


class ReplicaServer:
    """The replica protocol over one engine; ``ledger`` is needed only to share the vault with joining peers."""

    def __init__(
        self,
        identity: Identity,
        machine_id: str,
        deployment: Deployment,
        engine_url: str,
        vault: Vault,
        *,
        ledger: LedgerReader | None = None,
        fault: Fault = "none",
    ) -> None:
        if fault not in FAULTS:
            raise ConfigError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r:.40}")
        self.identity, self.machine_id, self.deployment = identity, machine_id, deployment
        self.engine_url, self.vault, self.ledger, self.fault = engine_url, vault, ledger, fault
        self._private = deployment_key(vault, deployment.order_id)
        self._digest = deployment.digest
        self._engine: EngineClient | None = None

    @property
    def deployment_key(self) -> bytes:
        """The deployment's X25519 public key, which clients seal requests to (published on the ledger)."""
        return self._private.public_key().public_bytes_raw()

    @property
    def engine(self) -> EngineClient:
        if self._engine is None:
            raise ServiceUnavailable("the replica is not serving yet; wait for it to start")
        return self._engine

    # --- endpoints -------------------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        await self.engine.health()
        return JSONResponse(
            {
                "status": "ok",
                "order_id": self.deployment.order_id,
                "machine_id": self.machine_id,
                "model": self.deployment.order_id,
                "deployment_digest": self._digest,
            }
        )

    async def models(self, request: Request) -> Response:
        card = {"id": self.deployment.order_id, "object": "model", "created": 0, "owned_by": "cloister"}
        return JSONResponse({"object": "list", "data": [card]})

    async def join(self, request: Request) -> Response:
        if self.ledger is None:
            raise ServiceUnavailable("this replica has no ledger to check peers against; ask another replica")
        join = parse_join_request(await read_json(request, MAX_BODY))
        ledger = self.ledger
        answer = await run_in_threadpool(
            lambda: share_vault(
                self.vault, join, ledger=ledger, order_id=self.deployment.order_id, machine_id=self.machine_id
            )
        )
        return JSONResponse(answer)

    async def execute(self, request: Request) -> Response:
        execution = self._parse(await read_json(request, MAX_BODY))
        if self.fault == "silent":
            await asyncio.Event().wait()  # never answers; the gateway's commit timeout catches it
        body = execution.request.to_openai()
        if execution.request.stream:
            return await self._stream(execution, body)
        completion = await self.engine.complete(body)
        answer = answer_of(completion)
        if self.fault == "wrong-output":
            answer = await self._perturb(answer)
            completion = _with_answer(completion, answer)
        completion["model"] = self.deployment.order_id
        signed = self._commit(execution, answer)
        if execution.response_key is None:
            return JSONResponse({"response": completion, "commitment": signed.to_json()})
        sealed = seal_response(execution.response_key, self.deployment.order_id, execution.request.digest, completion)
        return JSONResponse({"sealed_response": base64.b64encode(sealed).decode(), "commitment": signed.to_json()})

    # --- parts -----------------------------------------------------------------------------------------------

    def _parse(self, body: Any) -> _Execution:
        if not isinstance(body, dict) or set(body) not in _ENVELOPES:
            raise BadRequest(
                'send {"request": <chat request>, "role", "created_at"} or {"sealed": <base64>, "role", "created_at"}'
            )
        role, created_at = body["role"], body["created_at"]
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
        try:
            check_count(created_at, "created_at")
        except CloisterError as exc:
            raise InvalidRequest(exc.message, param="created_at") from None
        raw, response_key = body.get("request"), None
        if "sealed" in body:
            raw, response_key = self._open(body["sealed"])
        if not isinstance(raw, dict):
            raise InvalidRequest("request must be an OpenAI chat completion request object", param="request")
        request = normalize_request(raw)
        if request.model != self.deployment.order_id:
            raise InvalidRequest(
                f"this replica serves deployment {self.deployment.order_id}, not {request.model:.80}", param="model"
            )
        if response_key is not None and request.stream:
            raise InvalidRequest("a sealed request cannot stream; seal it with stream false", param="stream")
        return _Execution(request, role, created_at, response_key)

    def _open(self, sealed: Any) -> tuple[dict[str, Any], bytes]:
        try:
            data = base64.b64decode(sealed, validate=True) if isinstance(sealed, str) else None
        except ValueError:
            data = None
        if data is None:
            raise InvalidRequest("sealed must be the sealed request as base64", param="sealed")
        try:
            return open_request(self._private, self.deployment.order_id, data)
        except CryptoError:
            raise InvalidRequest(
                f"the sealed request does not open with deployment {self.deployment.order_id}'s key: it was "
                "sealed to another deployment or altered; seal it again to the key on the ledger",
                param="sealed",
            ) from None

    async def _perturb(self, answer: Answer) -> Answer:
        vocab = (await self.engine.health()).get("vocab_size")
        if not isinstance(vocab, int) or vocab < 2:
            raise ReplicaError("the engine does not report its vocabulary size")
        ids = (*answer.token_ids[:-1], (answer.token_ids[-1] + 1) % vocab)
        return Answer(await self.engine.detokenize(ids), ids, answer.prompt_tokens, answer.finish_reason)

    def _commit(self, execution: _Execution, answer: Answer) -> SignedCommitment:
        commitment = Commitment(
            deployment_id=self.deployment.order_id,
            machine_id=self.machine_id,
            request_digest=execution.request.digest,
            params_digest=execution.request.params_digest,
            deployment_digest=self._digest,
            output_digest=output_digest(answer.token_ids),
            content_digest=content_digest(answer.text),
            completion_tokens=len(answer.token_ids),
            prompt_tokens=answer.prompt_tokens,
            role=execution.role,
            created_at=execution.created_at,
        )
        return sign_commitment(self.identity, commitment)

    async def _stream(self, execution: _Execution, body: dict[str, Any]) -> Response:
        chunks = self.engine.stream(body)
        first = await anext(chunks)  # engine errors still become a JSON error answer, not a broken stream
        return StreamingResponse(self._relay(execution, first, chunks), media_type="text/event-stream")

    async def _relay(self, execution: _Execution, first: Any, chunks: AsyncGenerator[Any]) -> AsyncIterator[bytes]:
        """Pass the engine's chunks on (honest) or hold them and send the perturbed answer (wrong-output), then
        the signed commitment and ``[DONE]``. A caller that goes away closes the engine stream, which stops it."""
        held: list[dict[str, Any]] = []
        text: list[str] = []
        last: dict[str, Any] = {}
        async with aclosing(chunks):
            async for chunk in _prepend(first, chunks):
                if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list) or not chunk["choices"]:
                    raise ReplicaError("the engine streamed a chunk without choices")
                chunk["model"] = self.deployment.order_id
                last = chunk
                delta = chunk["choices"][0].get("delta") or {}
                text.append(delta.get("content") or "")
                if self.fault == "wrong-output":
                    held.append(chunk)
                else:
                    yield sse(chunk)
        answer = answer_of(last, "".join(text))
        if self.fault == "wrong-output":
            answer = await self._perturb(answer)
            for chunk in _rewritten(held, answer):
                yield sse(chunk)
        yield sse(self._commit(execution, answer).to_json(), event="commitment")
        yield DONE

    # --- app -------------------------------------------------------------------------------------------------

    def _lifespan(self) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self._engine = EngineClient(self.engine_url)
            try:
                yield
            finally:
                await self._engine.aclose()
                self._engine = None

        return lifespan

    def app(self) -> Starlette:
        """The ASGI app: ``/health``, ``/v1/models``, ``/cloister/v1/execute``, ``/cloister/v1/vault/join``."""
        return Starlette(
            routes=[
                Route("/health", _endpoint(self.health)),
                Route("/v1/models", _endpoint(self.models)),
                Route(EXECUTE_PATH, _endpoint(self.execute), methods=["POST"]),
                Route(JOIN_PATH, _endpoint(self.join), methods=["POST"]),
            ],
            exception_handlers={HTTPException: _http_error},
            lifespan=self._lifespan(),
        )


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


def _with_answer(completion: dict[str, Any], answer: Answer) -> dict[str, Any]:
    choice = {**completion["choices"][0], "message": {"role": "assistant", "content": answer.text}}
    extension = {**completion["cloister"], "token_ids": list(answer.token_ids)}
    return {**completion, "choices": [choice], "cloister": extension}


def _rewritten(held: list[dict[str, Any]], answer: Answer) -> list[dict[str, Any]]:
    """The perturbed answer as chunks: the engine's opening, all text in one, the engine's last (perturbed ids)."""
    opening, last = held[0], held[-1]
    middle = {**last, "choices": [{**last["choices"][0], "delta": {"content": answer.text}, "finish_reason": None}]}
    for name in ("usage", "cloister"):
        middle.pop(name, None)
    closing = {**last, "cloister": {**last["cloister"], "token_ids": list(answer.token_ids)}}
    return [opening, middle, closing]


def _endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except EngineRefused as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        except CloisterError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unexpected error serving %s", request.url.path)
            return error_response(ReplicaError("the replica hit an unexpected error (in its log); retry elsewhere"))

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(BadRequest(f"no endpoint {request.method} {request.url.path} on a replica"), status)

"""One chat request through the gateway: checked, held against credit, run under consensus, receipted, billed.

The same path serves plain OpenAI requests and sealed ones; for a sealed request the gateway never sees the
prompt or the answer, only their digests (which the replicas commit to) and the token counts it bills.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread

from cloister.consensus.modes import ConsensusMode, parse_mode
from cloister.consensus.receipt import Receipt, ReplicaRef, SelectionInputs, new_receipt_id, sign_receipt
from cloister.consensus.requests import MAX_TOKENS, normalize_request
from cloister.consensus.sealing import MAX_SEALED
from cloister.consensus.selection import MAX_NONCE
from cloister.crypto.digest import digest_bytes
from cloister.errors import BadRequest, InvalidConsensusMode
from cloister.gateway.auth import Caller
from cloister.gateway.deployments import Deployment, Directory
from cloister.gateway.orchestrator import Job, Outcome
from cloister.gateway.service import Gateway
from cloister.gateway.upstream import ChunkSink, Expected

CONSENSUS_HEADER = "x-cloister-consensus"
NONCE_HEADER = "x-cloister-nonce"
DEFAULT_MODE = parse_mode("single")


@dataclass(frozen=True)
class Request:
    """A request ready to run: who pays, what to run, under which mode, with which selection inputs."""

    caller: Caller
    deployment: Deployment
    mode: ConsensusMode
    body: dict[str, Any]
    expected: Expected
    seed_digest: str
    nonce: bytes
    nonce_drawn: bool
    worst_tokens: int
    stream: bool = False
    receipt_id: str = field(default_factory=new_receipt_id)

    @property
    def sealed(self) -> bool:
        return "sealed" in self.body


@dataclass(frozen=True)
class Result:
    """A finished request: the consensus outcome and the receipt that records it."""

    request: Request
    outcome: Outcome
    receipt: Receipt

    @property
    def tokens(self) -> tuple[int, int]:
        """``(prompt, completion)`` tokens of the answer the user got."""
        commitment = self.outcome.answer.commitment
        return commitment.prompt_tokens, commitment.completion_tokens

    def extension(self) -> dict[str, Any]:
        """The ``cloister`` field added to every answer."""
        return {
            "receipt_id": self.receipt.receipt_id,
            "mode": str(self.request.mode),
            "agreed": self.outcome.verdict.agreed,
            "dispute_id": self.outcome.dispute_id,
            "client_nonce": self.request.nonce.hex(),
            "nonce_drawn_by_gateway": self.request.nonce_drawn,
        }

    def headers(self) -> dict[str, str]:
        return {
            "X-Cloister-Receipt": self.receipt.receipt_id,
            "X-Cloister-Consensus": str(self.request.mode),
            "X-Cloister-Agreed": "true" if self.outcome.verdict.agreed else "false",
        }


def plain_request(directory: Directory, caller: Caller, body: Mapping[str, Any], headers: Mapping[str, str]) -> Request:
    """An OpenAI chat request to one of the deployments in ``directory``."""
    request = normalize_request(body)
    deployment = directory.deployment(request.model)
    nonce, drawn = client_nonce(headers)
    return Request(
        caller=caller,
        deployment=deployment,
        mode=consensus_mode(headers, caller, deployment),
        body={"request": request.to_json()},
        expected=Expected(deployment.order_id, deployment.deployment_digest, request.digest, request.params_digest),
        seed_digest=request.digest,
        nonce=nonce,
        nonce_drawn=drawn,
        worst_tokens=request.max_tokens,
        stream=request.stream,
    )


def sealed_request(
    directory: Directory, caller: Caller, body: Mapping[str, Any], headers: Mapping[str, str]
) -> Request:
    """``{"model", "sealed"}``: opaque bytes, selection seeded by their digest, the worst case the most tokens."""
    if set(body) != {"model", "sealed"} or not isinstance(body["model"], str):
        raise BadRequest('a sealed request is {"model": deployment id, "sealed": base64}', param="sealed")
    deployment = directory.deployment(body["model"])
    sealed = body["sealed"]
    raw = _sealed_bytes(sealed)
    nonce, drawn = client_nonce(headers)
    return Request(
        caller=caller,
        deployment=deployment,
        mode=consensus_mode(headers, caller, deployment),
        body={"sealed": sealed},
        expected=Expected(deployment.order_id, deployment.deployment_digest, None, None),
        seed_digest=digest_bytes(raw),
        nonce=nonce,
        nonce_drawn=drawn,
        worst_tokens=MAX_TOKENS,
    )


def _sealed_bytes(value: object) -> bytes:
    if not isinstance(value, str) or len(value) > 4 * (MAX_SEALED // 3 + 1):
        raise BadRequest(f"sealed must be the sealed request as base64 (at most {MAX_SEALED} bytes)", param="sealed")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("sealed is not valid base64", param="sealed") from None
    if not raw:
        raise BadRequest("sealed is empty; seal a request with cloister.consensus.sealing.seal_request", param="sealed")
    return raw


def consensus_mode(headers: Mapping[str, str], caller: Caller, deployment: Deployment) -> ConsensusMode:
    """The request's header, else the API key's mode, else the deployment's default, else ``single``."""
    header = headers.get(CONSENSUS_HEADER)
    if header is not None:
        try:
            return parse_mode(header)
        except InvalidConsensusMode as exc:
            raise InvalidConsensusMode(f"header X-Cloister-Consensus: {exc.message}", param=CONSENSUS_HEADER) from None
    return caller.consensus or deployment.default_mode or DEFAULT_MODE


def client_nonce(headers: Mapping[str, str]) -> tuple[bytes, bool]:
    """The client's nonce (hex), or a fresh one the gateway draws (and says so in the answer)."""
    text = headers.get(NONCE_HEADER)
    if text is None:
        return os.urandom(16), True
    try:
        nonce = bytes.fromhex(text.strip())
    except ValueError:
        nonce = b""
    if not 0 < len(nonce) <= MAX_NONCE:
        raise BadRequest(
            f"header X-Cloister-Nonce must be 1 to {MAX_NONCE} bytes as hex, got {text!r:.80}", param=NONCE_HEADER
        )
    return nonce, False


async def run(gateway: Gateway, request: Request, sink: ChunkSink | None = None) -> Result:
    """Hold credit, run the consensus, sign and store the receipt with the usage it bills; release the hold."""
    deployment = request.deployment
    hold = await to_thread.run_sync(
        gateway.meter.hold,
        deployment.order_id,
        request.caller.account,
        request.worst_tokens,
        deployment.price_per_1k_tokens,
    )
    try:
        head = await to_thread.run_sync(gateway.ledger.head)
        job = Job(
            deployment=deployment,
            mode=request.mode,
            body=request.body,
            expected=request.expected,
            seed_digest=request.seed_digest,
            nonce=request.nonce,
            head=head,
            created_at=int(time.time()),
            sink=sink,
        )
        outcome = await gateway.orchestrator.run(job)
        receipt = _receipt(gateway, request, job, outcome)
        signed = sign_receipt(gateway.identity, receipt)
        result = Result(request, outcome, receipt)
        await to_thread.run_sync(
            gateway.store.record,
            receipt.receipt_id,
            deployment.order_id,
            signed.to_bytes(),
            receipt.issued_at,
            request.caller.account,
            sum(result.tokens),
        )
        return result
    finally:
        gateway.meter.release(hold)


def _receipt(gateway: Gateway, request: Request, job: Job, outcome: Outcome) -> Receipt:
    selection = outcome.selection
    inputs = SelectionInputs(
        head_height=job.head.height,
        head_hash=job.head.hash,
        client_nonce=request.nonce,
        candidates=selection.candidates,
        selected=selection.selected,
        referees=selection.referees,
        cross_triggered=selection.cross_triggered,
        resampled=outcome.resampled,
        sealed_digest=request.seed_digest if request.sealed else None,
    )
    replicas = [outcome.replicas[machine_id] for machine_id in inputs.involved]
    answer = outcome.answer.commitment
    return Receipt(
        receipt_id=request.receipt_id,
        deployment_id=request.deployment.order_id,
        request_digest=answer.request_digest,
        content_digest=answer.content_digest,
        mode=str(request.mode),
        selection=inputs,
        replicas=tuple(ReplicaRef(r.machine_id, r.loader_signing_key, r.tcb_id) for r in replicas),
        commitments=tuple(a.signed for a in outcome.answers),
        verdict=outcome.verdict,
        dispute_id=outcome.dispute_id,
        gateway=gateway.address,
        issued_at=int(time.time()),
    )

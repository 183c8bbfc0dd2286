"""Replicas of a deployment on a real embedded ledger: the loader prepares, ``start_replica`` runs the
``chat_inference`` engine on the tiny model, creates or joins the vault, and serves the replica protocol.

Two replicas of one deployment (two engine processes) must commit to the same outputs; the vault (and with it
the deployment key) passes only to attested replicas of the same deployment and engine; sealed requests open only
inside a replica; the fault modes misbehave as the gateway tests expect.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.node.market import Market, make_market

from cloister.client.sdk import Client
from cloister.consensus.commitment import (
    Commitment,
    SignedCommitment,
    content_digest,
    deployment_digest,
    output_digest,
)
from cloister.consensus.endpoint import verify_endpoint
from cloister.consensus.requests import normalize_request
from cloister.consensus.sealing import open_response, seal_request
from cloister.consensus.verdict import decide
from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity
from cloister.engines.bundle import builtin_engine, pack
from cloister.errors import InvalidSignature, VaultJoinRefused
from cloister.ledger.genesis import UNITS_PER_TOKEN
from cloister.ledger.records import Account, Order
from cloister.ledger.transactions import CreateOrder, DepositStake, RegisterEndpoint
from cloister.node.controller import ProviderNode
from cloister.runtime.loader import TrustedLoader
from cloister.runtime.serving import BackgroundServer, Deployment, Fault, ReplicaHandle, ReplicaServer, start_replica
from cloister.runtime.serving.vault_share import JOIN_PATH, join_request_json, join_vault
from cloister.runtime.vault import JoinRequest, Vault

QUESTION = "What colour is the Zorblax moon?"


@dataclass
class Deployed:
    market: Market
    order: Order
    nodes: dict[str, ProviderNode]  # machine id -> node, the assigned ones first
    outsider: ProviderNode
    replicas: list[ReplicaHandle]
    engine_digest: str
    root: Path

    @property
    def ledger(self) -> Any:
        return self.market.ledger

    def node(self, handle: ReplicaHandle) -> ProviderNode:
        return self.nodes[handle.server.machine_id]


def _loader(node: ProviderNode, root: Path) -> TrustedLoader:
    assert node.registration is not None
    return TrustedLoader(
        identity=node.loader,
        machine_id=node.machine_id,
        tcb_id=node.registration.tcb_id,
        store=node.store,
        workspace_root=root / "workspaces" / node.machine_id,
        threads=1,
    )


def _account(client: Client) -> Account:
    return client.ledger.account(client.address)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("deployment")
    market = make_market(root)
    nodes = [market.node(f"node-{i}") for i in range(3)]
    for node in nodes:
        node.wallet.send(DepositStake(100 * UNITS_PER_TOKEN))
    owner, developer, gateway = market.party("owner"), market.party("developer"), market.party("gateway")
    model = market.publish_model(owner)
    bundle = root / "chat_inference.bundle"
    bundle.write_bytes(pack(builtin_engine("chat_inference")))
    engine = owner.publish("engine", bundle, pricing=model.pricing, restrictions=model.restrictions)
    params = {"price_per_1k_tokens": 0, "gateway": gateway.address}
    receipt = developer.wallet.send(
        CreateOrder("inference", model.offer_id, (), engine.offer_id, None, params, 1, 2, 10 * UNITS_PER_TOKEN)
    )
    order_id = next(e.attrs["order_id"] for e in receipt.events if e.kind == "order.created")
    market.keeper("owner").run_once()
    order = market.ledger.order(order_id)
    by_machine = {node.machine_id: node for node in nodes}
    offers = {offer_id: market.ledger.offer(offer_id) for offer_id in order.content_offers}
    grants = market.ledger.grants(order_id)
    replicas: list[ReplicaHandle] = []
    try:
        for machine_id in order.machines:
            loader = _loader(by_machine[machine_id], root)
            prepared = loader.prepare(order, offers, grants, _account(developer))
            handle = start_replica(loader, prepared, ledger=market.ledger)
            replicas.append(handle)
            by_machine[machine_id].wallet.send(
                RegisterEndpoint(order_id, machine_id, handle.url, handle.deployment_key, handle.key_signature)
            )
        outsider = next(node for node in nodes if node.machine_id not in order.machines)
        yield Deployed(
            market,
            market.ledger.order(order_id),
            {m: by_machine[m] for m in (*order.machines, outsider.machine_id)},
            outsider,
            replicas,
            str(engine.content_digest),
            root,
        )
    finally:
        for handle in replicas:
            handle.stop()


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 12, **extra}


def _execute(url: str, request: dict[str, Any], role: str = "selected", created_at: int = 1700000000) -> Any:
    response = httpx.post(
        f"{url}/cloister/v1/execute", json={"request": request, "role": role, "created_at": created_at}, timeout=120
    )
    assert response.status_code == 200, response.text
    return response.json()


# --- deployment, vault, endpoints --------------------------------------------------------------------------------


def test_both_replicas_serve_with_one_deployment_key_published_on_the_ledger(deployed: Deployed) -> None:
    first, second = deployed.replicas
    assert first.deployment_key == second.deployment_key
    assert first.server.vault.key.vault_id == second.server.vault.key.vault_id
    endpoints = deployed.ledger.endpoints(deployed.order.order_id)
    assert {(e.machine_id, e.url, e.deployment_key) for e in endpoints} == {
        (h.server.machine_id, h.url, h.deployment_key) for h in deployed.replicas
    }
    for endpoint in endpoints:
        machine = deployed.ledger.machine(endpoint.machine_id)
        verify_endpoint(
            machine.loader_signing_key,
            endpoint.order_id,
            endpoint.machine_id,
            endpoint.url,
            endpoint.deployment_key,
            endpoint.key_signature,
        )
    health = httpx.get(f"{first.url}/health").json()
    offers = {deployed.ledger.offer(o).kind: deployed.ledger.offer(o) for o in deployed.order.content_offers}
    assert health == {
        "status": "ok",
        "order_id": deployed.order.order_id,
        "machine_id": first.server.machine_id,
        "model": deployed.order.order_id,
        "deployment_digest": deployment_digest(
            deployed.order.order_id, str(offers["model"].content_digest), [], deployed.engine_digest
        ),
    }
    models = httpx.get(f"{second.url}/v1/models").json()
    assert [card["id"] for card in models["data"]] == [deployed.order.order_id]


def test_a_replica_joins_through_a_named_peer_and_stop_wipes_its_workspace(deployed: Deployed) -> None:
    first, second = deployed.replicas
    node = deployed.node(first)
    loader = _loader(node, deployed.root / "again")
    order = deployed.order
    offers = {offer_id: deployed.ledger.offer(offer_id) for offer_id in order.content_offers}
    developer = deployed.ledger.account(order.owner)
    prepared = loader.prepare(order, offers, deployed.ledger.grants(order.order_id), developer)
    handle = start_replica(loader, prepared, peers=[second.url])
    try:
        assert handle.deployment_key == first.deployment_key and handle.running()
        answer = _execute(handle.url, _chat(order.order_id))
        assert answer["commitment"] == _execute(first.url, _chat(order.order_id))["commitment"]
    finally:
        wipe = handle.stop()
    assert not handle.running() and not prepared.workspace.exists()
    assert wipe.files > 0 and "vault.bin" in wipe.paths


# --- commitments -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decoding", [{}, {"temperature": 0.9, "top_p": 0.95, "seed": 5}], ids=["greedy", "seeded"])
def test_two_replicas_commit_to_the_same_output_signed_by_their_loaders(
    deployed: Deployed, decoding: dict[str, Any]
) -> None:
    order_id = deployed.order.order_id
    request = _chat(order_id, **decoding)
    normalized = normalize_request(request)
    health = httpx.get(f"{deployed.replicas[0].url}/health").json()
    commitments = []
    for role, handle in zip(("selected", "referee"), deployed.replicas, strict=True):
        answer = _execute(handle.url, request, role=role, created_at=1234)
        response = answer["response"]
        machine = deployed.ledger.machine(handle.server.machine_id)
        commitment = SignedCommitment.from_json(answer["commitment"]).verify(machine.loader_signing_key)
        ids, text = response["cloister"]["token_ids"], response["choices"][0]["message"]["content"]
        assert response["model"] == order_id and response["object"] == "chat.completion"
        assert commitment == Commitment(
            deployment_id=order_id,
            machine_id=machine.machine_id,
            request_digest=normalized.digest,
            params_digest=normalized.params_digest,
            deployment_digest=health["deployment_digest"],
            output_digest=output_digest(ids),
            content_digest=content_digest(text),
            completion_tokens=response["usage"]["completion_tokens"],
            prompt_tokens=response["usage"]["prompt_tokens"],
            role=role,  # type: ignore[arg-type]
            created_at=1234,
        )
        assert len(ids) == commitment.completion_tokens
        commitments.append(commitment)
    verdict = decide(commitments)
    assert verdict.agreed and verdict.output_digest == commitments[0].output_digest
    with pytest.raises(InvalidSignature):
        SignedCommitment.from_json(answer["commitment"]).verify(deployed.outsider.loader.public.signing_key)


def _events(url: str, request: dict[str, Any]) -> list[tuple[str, str]]:
    """(event name, data) of every server-sent event of a streamed execution."""
    body = {"request": request, "role": "selected", "created_at": 1700000000}
    with httpx.stream("POST", f"{url}/cloister/v1/execute", json=body, timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = []
    for block in text.split("\n\n"):
        if block:
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((fields.get("event", "message"), fields["data"]))
    return events


def _streamed(url: str, request: dict[str, Any]) -> tuple[str, SignedCommitment, list[dict[str, Any]]]:
    events = _events(url, {**request, "stream": True})
    assert events[-1] == ("message", "[DONE]") and events[-2][0] == "commitment"
    chunks = [json.loads(data) for _, data in events[:-2]]
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    return text, SignedCommitment.from_json(json.loads(events[-2][1])), chunks


def test_a_stream_relays_the_chunks_then_the_same_commitment(deployed: Deployed) -> None:
    handle = deployed.replicas[1]
    request = _chat(deployed.order.order_id, temperature=1, seed=3)
    plain = _execute(handle.url, request)
    text, commitment, chunks = _streamed(handle.url, request)
    assert text == plain["response"]["choices"][0]["message"]["content"]
    assert commitment.to_json() == plain["commitment"]
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["model"] == request["model"] for chunk in chunks)
    assert chunks[-1]["cloister"] == plain["response"]["cloister"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["response"]["choices"][0]["finish_reason"]


# --- sealed requests ---------------------------------------------------------------------------------------------


def _sealed_body(sealed: bytes) -> dict[str, Any]:
    return {"sealed": base64.b64encode(sealed).decode(), "role": "selected", "created_at": 1700000000}


def test_a_sealed_request_is_opened_and_answered_only_inside_the_replica(deployed: Deployed) -> None:
    order_id = deployed.order.order_id
    endpoint = deployed.ledger.endpoints(order_id)[0]
    request = _chat(order_id, max_tokens=8)
    sealed, secret = seal_request(endpoint.deployment_key, order_id, request)
    wire = json.dumps(_sealed_body(sealed)).encode()
    assert QUESTION.encode() not in wire
    response = httpx.post(f"{endpoint.url}/cloister/v1/execute", content=wire, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"sealed_response", "commitment"}
    plain = _execute(endpoint.url, request)
    text = plain["response"]["choices"][0]["message"]["content"]
    assert answer["commitment"] == plain["commitment"]
    digest = normalize_request(request).digest
    opened = open_response(secret, order_id, digest, base64.b64decode(answer["sealed_response"]))
    assert opened["choices"][0]["message"]["content"] == text and opened["cloister"] == plain["response"]["cloister"]
    assert json.dumps(text)[1:-1].encode() not in response.content


@contextmanager
def _replica(
    deployed: Deployed,
    *,
    fault: Fault = "none",
    identity: Identity | None = None,
    machine_id: str | None = None,
    deployment: Deployment | None = None,
    vault: Vault | None = None,
    ledger: bool = True,
) -> Iterator[str]:
    """Another replica server in this process, on the first replica's engine."""
    first = deployed.replicas[0].server
    server = ReplicaServer(
        identity or first.identity,
        machine_id or first.machine_id,
        deployment or first.deployment,
        first.engine_url,
        vault or first.vault,
        ledger=deployed.ledger if ledger else None,
        fault=fault,
    )
    http = BackgroundServer(server.app(), "127.0.0.1", 0)
    try:
        yield http.url
    finally:
        http.stop()


def _refused(url: str, body: Any, status: int = 400, *, raw: bytes | None = None) -> dict[str, Any]:
    response = httpx.post(f"{url}/cloister/v1/execute", content=raw if raw is not None else json.dumps(body))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return dict(error)


def test_a_sealed_request_is_refused_when_tampered_sealed_elsewhere_or_replayed_to_another_deployment(
    deployed: Deployed, tmp_path: Path
) -> None:
    first = deployed.replicas[0]
    order_id = deployed.order.order_id
    sealed, _ = seal_request(first.deployment_key, order_id, _chat(order_id))
    flipped = bytearray(sealed)
    flipped[len(flipped) // 2] ^= 1
    assert _refused(first.url, _sealed_body(bytes(flipped)))["param"] == "sealed"
    assert _refused(first.url, _sealed_body(sealed[:-1]))["param"] == "sealed"
    assert _refused(first.url, {**_sealed_body(sealed), "sealed": "not base64!"})["param"] == "sealed"
    elsewhere, _ = seal_request(Identity.generate().public.sealing_key, order_id, _chat(order_id))
    assert _refused(first.url, _sealed_body(elsewhere))["param"] == "sealed"
    other = Deployment("or-" + "f" * 16, *(digest_bytes(b"x"), (), deployed.engine_digest))
    with _replica(deployed, deployment=other) as url:  # the same key, another deployment: the AAD differs
        assert _refused(url, _sealed_body(sealed))["param"] == "sealed"


# --- faults ------------------------------------------------------------------------------------------------------


def test_a_wrong_output_replica_commits_to_perturbed_tokens_and_is_outvoted(deployed: Deployed) -> None:
    order_id, outsider = deployed.order.order_id, deployed.outsider
    request = _chat(order_id)
    honest = [_execute(h.url, request) for h in deployed.replicas]
    with _replica(deployed, fault="wrong-output", identity=outsider.loader, machine_id=outsider.machine_id) as url:
        wrong = _execute(url, request)
        streamed_text, streamed_commitment, _ = _streamed(url, request)
    good_ids, bad_ids = honest[0]["response"]["cloister"]["token_ids"], wrong["response"]["cloister"]["token_ids"]
    assert bad_ids[:-1] == good_ids[:-1] and bad_ids[-1] != good_ids[-1]
    engine = deployed.replicas[0].server.engine_url
    decoded = httpx.post(f"{engine}/v1/detokenize", json={"token_ids": bad_ids}).json()["text"]
    assert wrong["response"]["choices"][0]["message"]["content"] == decoded == streamed_text
    assert streamed_commitment.to_json() == wrong["commitment"]
    commitments = [
        SignedCommitment.from_json(answer["commitment"]).verify(deployed.ledger.machine(machine).loader_signing_key)
        for answer, machine in zip(
            [*honest, wrong], [*(h.server.machine_id for h in deployed.replicas), outsider.machine_id], strict=True
        )
    ]
    assert commitments[2].content_digest == content_digest(decoded)
    verdict = decide(commitments)
    assert not verdict.agreed and verdict.output_digest == commitments[0].output_digest
    assert verdict.dissenters == (outsider.machine_id,)


def test_a_silent_replica_never_answers_an_execution_but_looks_healthy(deployed: Deployed) -> None:
    with _replica(deployed, fault="silent") as url:
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        body = {"request": _chat(deployed.order.order_id), "role": "selected", "created_at": 1}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/cloister/v1/execute", json=body, timeout=httpx.Timeout(3, connect=3))


# --- malformed input ---------------------------------------------------------------------------------------------


def _bodies(order_id: str) -> list[tuple[Any, str | None]]:
    good = {"request": _chat(order_id), "role": "selected", "created_at": 1}
    return [
        ([good], None),
        ({key: value for key, value in good.items() if key != "role"}, None),
        ({**good, "extra": 1}, None),
        ({**good, "sealed": "AAAA"}, None),
        ({**good, "role": "boss"}, "role"),
        ({**good, "created_at": -1}, "created_at"),
        ({**good, "created_at": "1"}, "created_at"),
        ({**good, "request": "hello"}, "request"),
        ({**good, "request": _chat(order_id, temperature=3)}, "temperature"),
        ({**good, "request": _chat(order_id, max_tokens=0)}, "max_tokens"),
        ({**good, "request": {**_chat(order_id), "messages": []}}, "messages"),
        ({**good, "request": _chat("or-" + "0" * 16)}, "model"),
    ]


def test_malformed_execute_bodies_get_openai_errors(deployed: Deployed) -> None:
    url = deployed.replicas[0].url
    for body, param in _bodies(deployed.order.order_id):
        error = _refused(url, body)
        assert (error["param"], error["type"]) == (param, "invalid_request_error"), body
    good = json.dumps({"request": _chat(deployed.order.order_id), "role": "selected", "created_at": 1})
    for raw in (b"", b"not json", good[:-1].encode(), good.encode()[:40], b'{"role": 1, "role": 2}'):
        assert _refused(url, None, raw=raw)["code"] == "bad_request"
    assert _refused(url, None, 413, raw=b" " * (9 << 20))["code"] == "payload_too_large"
    assert httpx.get(f"{url}/cloister/v1/execute").status_code == 405
    missing = httpx.get(f"{url}/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["message"]


def test_an_execution_replayed_gives_the_same_commitment(deployed: Deployed) -> None:
    url = deployed.replicas[0].url
    request = _chat(deployed.order.order_id, max_tokens=4)
    assert _execute(url, request)["commitment"] == _execute(url, request)["commitment"]


# --- vault join --------------------------------------------------------------------------------------------------


def test_the_vault_is_refused_to_an_unassigned_machine_another_engine_and_impostors(
    deployed: Deployed, tmp_path: Path
) -> None:
    url = deployed.replicas[0].url
    member = deployed.node(deployed.replicas[1])
    outsider = deployed.outsider
    cases = [
        (outsider.loader, outsider.machine_id, deployed.engine_digest, "not assigned"),
        (member.loader, member.machine_id, digest_bytes(b"another engine"), "runs engine"),
        (Identity.generate(), member.machine_id, deployed.engine_digest, "not signed"),
        (member.loader, "mc-" + "9" * 16, deployed.engine_digest, "cannot check machine"),
    ]
    for identity, machine_id, engine, why in cases:
        with pytest.raises(VaultJoinRefused, match=why):
            join_vault(url, identity, machine_id=machine_id, engine_digest=engine, path=tmp_path / "v.bin")
    assert not (tmp_path / "v.bin").exists()
    # A join request captured from a member and replayed under the outsider's machine id does not verify.
    captured = join_request_json(JoinRequest.make(member.loader, member.machine_id, deployed.engine_digest))
    replayed = httpx.post(f"{url}{JOIN_PATH}", json={**captured, "machine_id": outsider.machine_id})
    assert replayed.status_code == 403 and replayed.json()["error"]["code"] == "vault_join_refused"


def test_a_member_gets_the_vault_and_malformed_join_requests_are_refused(deployed: Deployed, tmp_path: Path) -> None:
    first, second = deployed.replicas
    member = deployed.node(second)
    vault = join_vault(
        first.url,
        member.loader,
        machine_id=member.machine_id,
        engine_digest=deployed.engine_digest,
        path=tmp_path / "v",
    )
    assert vault.key == second.server.vault.key and "deployment-key:" + deployed.order.order_id in vault.names()
    captured = join_request_json(JoinRequest.make(member.loader, member.machine_id, deployed.engine_digest))
    for body in ([], {}, {**captured, "extra": 1}, {**captured, "signature": "%%"}, {**captured, "machine_id": 7}):
        response = httpx.post(f"{first.url}{JOIN_PATH}", json=body)
        assert response.status_code == 400, body
    with _replica(deployed, ledger=False) as url:
        assert httpx.post(f"{url}{JOIN_PATH}", json=captured).status_code == 503

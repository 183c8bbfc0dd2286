"""What the gateway accepts from a replica: only a commitment signed by the machine's attested loader, to this
request, matching the text returned. A provider's host sits between the network and its TEE, so every answer is
read as hostile: here a proxy on the host tampers with a real replica's answers."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.gateway.conftest import Live, live_deployment
from tests.ledger.conftest import ThreadedServer, free_port

from cloister.consensus.endpoint import sign_endpoint
from cloister.consensus.modes import parse_mode
from cloister.consensus.requests import normalize_request
from cloister.consensus.selection import select, selection_seed
from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import digest_bytes
from cloister.gateway.upstream import Expected, Replica, ReplicaFailure, Upstream
from cloister.ledger.transactions import RegisterEndpoint

pytestmark = pytest.mark.slow
Mutation = Callable[[bytes], bytes]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_deployment(tmp_path_factory.mktemp("upstream"), 3, spares=0) as running:
        yield running


def tampering_proxy(target: str, mutate: Mutation) -> Starlette:
    """Forwards to ``target`` and rewrites the answer's bytes with ``mutate`` on the way back."""

    async def forward(request: Request) -> Response:
        async with httpx.AsyncClient(timeout=120) as http:
            answer = await http.request(
                request.method,
                f"{target}{request.url.path}",
                content=await request.body(),
                headers={"content-type": "application/json"},
            )
        body = mutate(answer.content) if request.url.path.startswith("/cloister/v1/execute") else answer.content
        return Response(body, status_code=answer.status_code, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])


def edit(change: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(raw: bytes) -> bytes:
        data = loads(raw)
        change(data)
        return canonical_json(data)

    return mutate


def flip_signature(data: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(data["commitment"]["signature"]))
    raw[0] ^= 1
    data["commitment"]["signature"] = base64.b64encode(bytes(raw)).decode()


def other_text(data: dict[str, Any]) -> None:
    data["response"]["choices"][0]["message"]["content"] += " (edited)"


def other_output(data: dict[str, Any]) -> None:
    data["commitment"]["commitment"]["output_digest"] = "sha256:" + "0" * 64


def no_commitment(data: dict[str, Any]) -> None:
    del data["commitment"]


def request_body(live: Live, question: str) -> dict[str, Any]:
    return {"model": live.deployment.order_id, "messages": [{"role": "user", "content": question}], "max_tokens": 8}


def replica_of(live: Live, index: int, url: str | None = None) -> Replica:
    machine_id = live.deployment.order.machines[index]
    machine = live.network.ledger.machine(machine_id)
    return Replica(
        machine_id, url or live.replicas[machine_id].url, machine.loader_signing_key, digest_bytes(machine.tcb_evidence)
    )


def execute(live: Live, replica: Replica, question: str) -> Any:
    request = normalize_request(request_body(live, question))
    gateway = live.gateway
    deployment = gateway.directory.deployment(live.deployment.order_id)
    expected = Expected(deployment.order_id, deployment.deployment_digest, request.digest, request.params_digest)

    async def run() -> Any:
        upstream = Upstream()
        try:
            return await upstream.execute(
                replica, {"request": request.to_json()}, "selected", expected, timeout=60, created_at=int(time.time())
            )
        finally:
            await upstream.aclose()

    return asyncio.run(run())


def test_an_untouched_answer_is_accepted_through_the_proxy(live: Live) -> None:
    with ThreadedServer(
        tampering_proxy(live.replicas[live.deployment.order.machines[0]].url, lambda raw: raw)
    ) as proxy:
        answer = execute(live, replica_of(live, 0, proxy.url), "Untouched?")
    assert answer.commitment.machine_id == live.deployment.order.machines[0]


@pytest.mark.parametrize(
    "mutate",
    [
        edit(flip_signature),
        edit(other_text),
        edit(other_output),
        edit(no_commitment),
        lambda raw: raw[: len(raw) // 2],
        lambda raw: b"",
        lambda raw: b'{"response": {}, "commitment": "x"}',
        lambda raw: raw.replace(b'"role":"selected"', b'"role":"referee"'),
    ],
    ids=["signature", "text", "output", "missing", "truncated", "empty", "shape", "role"],
)
def test_a_tampered_answer_is_refused(live: Live, mutate: Mutation) -> None:
    target = live.replicas[live.deployment.order.machines[0]].url
    with ThreadedServer(tampering_proxy(target, mutate)) as proxy, pytest.raises(ReplicaFailure) as failure:
        execute(live, replica_of(live, 0, proxy.url), "Tampered?")
    assert failure.value.kind == "invalid"


def test_a_replayed_answer_is_refused(live: Live) -> None:
    """The host answers a new request with the replica's signed answer to an earlier one."""
    recorded: list[bytes] = []

    def replay(raw: bytes) -> bytes:
        recorded.append(raw)
        return recorded[0]

    with ThreadedServer(tampering_proxy(live.replicas[live.deployment.order.machines[0]].url, replay)) as proxy:
        execute(live, replica_of(live, 0, proxy.url), "First question?")
        with pytest.raises(ReplicaFailure, match="request_digest") as failure:
            execute(live, replica_of(live, 0, proxy.url), "Second question?")
    assert failure.value.kind == "invalid"


def test_another_machines_answer_is_refused(live: Live) -> None:
    """The host forwards to another replica of the deployment: a valid commitment, by the wrong machine."""
    machines = live.deployment.order.machines
    proxy_server = ThreadedServer(tampering_proxy(live.replicas[machines[1]].url, lambda raw: raw))
    with proxy_server as proxy, pytest.raises(ReplicaFailure) as failure:
        execute(live, replica_of(live, 0, proxy.url), "Who answers?")
    assert failure.value.kind == "invalid"


def test_an_unreachable_replica_is_down(live: Live) -> None:
    with pytest.raises(ReplicaFailure) as failure:
        execute(live, replica_of(live, 0, f"http://127.0.0.1:{free_port()}"), "Anyone?")
    assert failure.value.kind == "down"


def test_the_gateway_routes_around_a_tampering_host(live: Live) -> None:
    """End to end: the tampered replica's answer does not count, a spare replaces it, nobody is slashed for it."""
    network, order_id = live.network, live.deployment.order_id
    machines = live.deployment.order.machines
    victim = machines[0]
    node = network.nodes[victim]
    with ThreadedServer(tampering_proxy(live.replicas[victim].url, edit(other_text))) as proxy:
        endpoint = next(e for e in network.ledger.endpoints(order_id) if e.machine_id == victim)
        signature = sign_endpoint(node.loader, order_id, victim, proxy.url, endpoint.deployment_key)
        node.wallet.send(RegisterEndpoint(order_id, victim, proxy.url, endpoint.deployment_key, signature))
        deadline = time.monotonic() + 30
        while (found := live.gateway.directory.replica(victim)) is None or found.url != proxy.url:
            assert time.monotonic() < deadline, "the gateway never read the new endpoint"
            time.sleep(0.1)
        body = request_body(live, "Through the proxy?")
        head = network.ledger.head()
        digest = normalize_request(body).digest
        nonce = next(
            n.to_bytes(8, "big").hex()
            for n in range(10_000)
            if select(
                selection_seed(head.hash, digest, n.to_bytes(8, "big")), sorted(machines), parse_mode("sampling:2")
            ).selected[0]
            == victim
        )
        response = httpx.post(
            f"{live.url}/v1/chat/completions",
            json=body,
            headers={
                "Authorization": f"Bearer {live.deployment.api_key()}",
                "X-Cloister-Consensus": "sampling:2",
                "X-Cloister-Nonce": nonce,
            },
            timeout=120,
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["cloister"]["agreed"] is True
    receipt = httpx.get(f"{live.url}/v1/receipts/{answer['cloister']['receipt_id']}").json()["receipt"]
    assert receipt["selection"]["selected"][0] == victim and len(receipt["selection"]["resampled"]) == 1
    assert victim not in {c["commitment"]["machine_id"] for c in receipt["commitments"]}
    assert network.ledger.timeouts(order_id) == [] and network.ledger.disputes(order_id) == []
    models = httpx.get(f"{live.url}/v1/models", headers={"Authorization": f"Bearer {live.deployment.api_key()}"}).json()
    assert models["data"][0]["cloister"]["replicas"] == 2, "the tampering replica is routed around"

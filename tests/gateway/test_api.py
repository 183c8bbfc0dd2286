"""The gateway's HTTP edge, before any replica is involved: keys, credit, malformed input, limits, routing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.gateway.conftest import Deployment, GatewayServer

from cloister.consensus.apikeys import make_api_key
from cloister.crypto.identity import Identity
from cloister.ledger.genesis import UNITS_PER_TOKEN

CHAT = "/v1/chat/completions"


@pytest.fixture
def served(deployment: Deployment, tmp_path: Path) -> Iterator[tuple[GatewayServer, httpx.Client]]:
    with GatewayServer(deployment.gateway(tmp_path / "gateway")) as server, httpx.Client(base_url=server.url) as http:
        yield server, http


def chat_body(deployment: Deployment, **extra: object) -> dict[str, object]:
    return {"model": deployment.order_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **extra}


def auth(deployment: Deployment, **kwargs: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {deployment.api_key(**kwargs)}"}


def assert_openai_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]
    if param is not None:
        assert error["param"] == param


def test_health_and_page(served: tuple[GatewayServer, httpx.Client], deployment: Deployment) -> None:
    _, http = served
    health = http.get("/health").json()
    assert health == {"status": "ok", "gateway": deployment.gateway_identity.address, "deployments": 1}
    page = http.get("/")
    assert page.status_code == 200 and "Cloister chat" in page.text
    assert http.get("/static/chat.js").status_code == 200


def test_models_lists_the_deployment(served: tuple[GatewayServer, httpx.Client], deployment: Deployment) -> None:
    _, http = served
    models = http.get("/v1/models", headers=auth(deployment)).json()
    assert models["object"] == "list"
    (model,) = models["data"]
    assert model["id"] == deployment.order_id
    assert model["owned_by"] == deployment.developer.address
    assert model["cloister"] == {"replicas": 0, "price_per_1k_tokens": 2 * UNITS_PER_TOKEN, "consensus": None}


@pytest.mark.parametrize("path", ["/v1/models", CHAT, "/cloister/v1/sealed/chat/completions"])
def test_every_api_needs_a_key(served: tuple[GatewayServer, httpx.Client], deployment: Deployment, path: str) -> None:
    _, http = served
    method = "GET" if path == "/v1/models" else "POST"
    body = None if method == "GET" else chat_body(deployment)
    assert_openai_error(http.request(method, path, json=body), 401, "invalid_api_key")
    wrong = {"Authorization": "Bearer clk_not-a-key.at-all"}
    assert_openai_error(http.request(method, path, json=body, headers=wrong), 401, "invalid_api_key")
    other_gateway = make_api_key(deployment.user.identity, Identity.generate().address)
    response = http.request(method, path, json=body, headers={"Authorization": f"Bearer {other_gateway}"})
    assert_openai_error(response, 401, "invalid_api_key")
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_key_of_an_unregistered_account_is_refused(
    served: tuple[GatewayServer, httpx.Client], deployment: Deployment
) -> None:
    _, http = served
    key = make_api_key(Identity.generate(), deployment.gateway_identity.address)
    response = http.post(CHAT, json=chat_body(deployment), headers={"Authorization": f"Bearer {key}"})
    assert_openai_error(response, 401, "invalid_api_key")
    assert "not registered" in response.json()["error"]["message"]


def test_no_credit_is_402(served: tuple[GatewayServer, httpx.Client], deployment: Deployment) -> None:
    _, http = served
    response = http.post(CHAT, json=chat_body(deployment), headers=auth(deployment))
    assert_openai_error(response, 402, "insufficient_credit")
    assert response.json()["error"]["type"] == "insufficient_quota"


def test_enough_credit_but_no_replica_is_503(
    served: tuple[GatewayServer, httpx.Client], deployment: Deployment
) -> None:
    _, http = served
    deployment.network.deposit_credit(deployment.user, deployment.order_id, UNITS_PER_TOKEN)
    response = http.post(CHAT, json=chat_body(deployment), headers=auth(deployment))
    assert_openai_error(response, 503, "not_enough_replicas")
    streamed = http.post(CHAT, json=chat_body(deployment, stream=True), headers=auth(deployment))
    assert_openai_error(streamed, 503, "not_enough_replicas")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"seed": "seven"}, "seed"),
        ({"stream": "yes"}, "stream"),
        ({"n": 2}, "n"),
        ({"tools": []}, "tools"),
        ({"model": 7}, "model"),
    ],
)
def test_malformed_requests_are_400_naming_the_param(
    served: tuple[GatewayServer, httpx.Client], deployment: Deployment, change: dict[str, object], param: str
) -> None:
    _, http = served
    response = http.post(CHAT, json=chat_body(deployment, **change), headers=auth(deployment))
    assert_openai_error(response, 400, "invalid_request", param)
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404(served: tuple[GatewayServer, httpx.Client], deployment: Deployment) -> None:
    _, http = served
    response = http.post(CHAT, json=chat_body(deployment, model="or-0000000000000000"), headers=auth(deployment))
    assert_openai_error(response, 404, "model_not_found", "model")


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ({"X-Cloister-Consensus": "majority:3"}, "x-cloister-consensus"),
        ({"X-Cloister-Consensus": "sampling:0"}, "x-cloister-consensus"),
        ({"X-Cloister-Nonce": "not hex"}, "x-cloister-nonce"),
        ({"X-Cloister-Nonce": "ab" * 65}, "x-cloister-nonce"),
    ],
)
def test_bad_cloister_headers_are_400(
    served: tuple[GatewayServer, httpx.Client], deployment: Deployment, headers: dict[str, str], param: str
) -> None:
    _, http = served
    response = http.post(CHAT, json=chat_body(deployment), headers={**auth(deployment), **headers})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"model": "a"',
        b"[1, 2]",
        b'{"model": "a", "model": "b", "messages": []}',
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 20 + b"1" + b"}" * 20,
        b'{"max_tokens": 1' + b"0" * 5000 + b"}",
    ],
)
def test_broken_and_hostile_json_is_400(
    served: tuple[GatewayServer, httpx.Client], deployment: Deployment, body: bytes
) -> None:
    _, http = served
    headers = {**auth(deployment), "Content-Type": "application/json"}
    assert_openai_error(http.post(CHAT, content=body, headers=headers), 400, "bad_request")


def test_wrong_content_type_is_400(served: tuple[GatewayServer, httpx.Client], deployment: Deployment) -> None:
    _, http = served
    headers = {**auth(deployment), "Content-Type": "text/plain"}
    assert_openai_error(http.post(CHAT, content=b"{}", headers=headers), 400, "bad_request")


def test_oversized_bodies_are_413(served: tuple[GatewayServer, httpx.Client], deployment: Deployment) -> None:
    _, http = served
    headers = {**auth(deployment), "Content-Type": "application/json"}
    huge = b'{"model": "' + b"a" * (2 << 20) + b'"}'
    assert_openai_error(http.post(CHAT, content=huge, headers=headers), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    assert_openai_error(http.post(CHAT, content=chunks(), headers=headers), 413, "payload_too_large")


def test_sealed_entry_checks_its_shape(served: tuple[GatewayServer, httpx.Client], deployment: Deployment) -> None:
    _, http = served
    path = "/cloister/v1/sealed/chat/completions"
    for body in (
        {"model": deployment.order_id},
        {"model": deployment.order_id, "sealed": "!!!"},
        {"model": deployment.order_id, "sealed": ""},
        {"model": deployment.order_id, "sealed": "aGk=", "messages": []},
    ):
        response = http.post(path, json=body, headers=auth(deployment))
        assert_openai_error(response, 400, "bad_request", "sealed")


def test_receipts_that_do_not_exist_are_404(served: tuple[GatewayServer, httpx.Client]) -> None:
    _, http = served
    for path in ("/v1/receipts/rc-0123456789abcdef", "/v1/receipts/rc-0123456789abcdef/verify", "/v1/receipts/x"):
        assert_openai_error(http.get(path), 404, "receipt_not_found")


def test_unknown_paths_and_methods_are_openai_errors(served: tuple[GatewayServer, httpx.Client]) -> None:
    _, http = served
    assert http.get("/v1/embeddings").status_code == 404
    assert http.get("/v1/embeddings").json()["error"]["type"] == "not_found_error"
    assert http.get(CHAT).status_code == 405
    assert http.get(CHAT).json()["error"]["message"]

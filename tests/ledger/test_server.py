"""The HTTP API and its client: every bad request gets a JSON 4xx naming the problem, and the server carries on."""

from __future__ import annotations

import http.server
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest
from tests.ledger.conftest import ThreadedServer, free_port

from cloister.crypto.identity import Identity
from cloister.errors import (
    NonceMismatch,
    RecordNotFound,
    RemoteError,
    ServiceUnavailable,
    SignatureRejected,
)
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.envelope import SignedTransaction, Transaction
from cloister.ledger.http import HttpLedger
from cloister.ledger.server import create_app
from cloister.ledger.transactions import RegisterAccount
from cloister.net import HttpClient


def register_tx(chain_id: str, identity: Identity | None = None) -> SignedTransaction:
    identity = identity or Identity.generate()
    payload = RegisterAccount("someone", identity.public.sealing_key)
    tx = Transaction(payload.TYPE, payload.to_payload(), identity.address, 1, chain_id)
    return SignedTransaction.sign(identity, tx)


@pytest.fixture
def client(served: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=10) as raw:
        yield raw


def error_of(response: httpx.Response, status: int, code: str) -> str:
    """Assert a JSON error answer and return its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert "Traceback" not in response.text
    return str(error["message"])


def still_serving(client: httpx.Client) -> None:
    assert client.get("/v1/health").status_code == 200


def test_health_head_and_a_submitted_transaction(client: httpx.Client, embedded: EmbeddedLedger) -> None:
    health = client.get("/v1/health").json()
    assert health == {"chain_id": "cloister-test", "head": embedded.head().to_json()}
    signed = register_tx("cloister-test")
    response = client.post("/v1/transactions", json=signed.to_json())
    assert response.status_code == 201
    receipt = response.json()
    assert (receipt["tx_hash"], receipt["height"]) == (signed.hash, 1)
    assert client.get("/v1/head").json() == embedded.head().to_json()
    assert client.get(f"/v1/accounts/{signed.tx.sender}").json()["nonce"] == 1
    assert client.get("/v1/blocks", params={"start": 1, "limit": 5}).json() == {"blocks": embedded.blocks()}
    assert client.get("/v1/events", params={"after": 0}).json() == embedded.events().to_json()


def half(body: bytes) -> bytes:
    return body[: len(body) // 2]


VALID = SignedTransaction.sign(
    identity := Identity.generate(),
    Transaction("transfer", {"to": identity.address, "amount": 1}, identity.address, 1, "cloister-test"),
).to_json()

BAD_BODIES = {
    "not JSON": (b"{not json", "application/json", "not valid JSON"),
    "truncated": (half(httpx.Request("POST", "/", json=VALID).content), "application/json", "not valid JSON"),
    "empty": (b"", "application/json", "not valid JSON"),
    "not UTF-8": (b'{"tx": "\xff\xfe"}', "application/json", "not valid JSON"),
    "an array": (b"[1, 2]", "application/json", "exactly tx, public_key, signature"),
    "missing signature": (
        httpx.Request("POST", "/", json={k: v for k, v in VALID.items() if k != "signature"}).content,
        "application/json",
        "exactly tx, public_key, signature",
    ),
    "missing tx field": (
        httpx.Request(
            "POST", "/", json={**VALID, "tx": {k: v for k, v in VALID["tx"].items() if k != "nonce"}}
        ).content,
        "application/json",
        "exactly type, payload, sender, nonce, chain_id",
    ),
    "ill-typed nonce": (
        httpx.Request("POST", "/", json={**VALID, "tx": {**VALID["tx"], "nonce": "1"}}).content,
        "application/json",
        "nonce",
    ),
    "key not hex": (
        httpx.Request("POST", "/", json={**VALID, "public_key": "zz"}).content,
        "application/json",
        "hex",
    ),
    "a float": (
        httpx.Request("POST", "/", json={**VALID, "tx": {**VALID["tx"], "payload": {"amount": 1.5}}}).content,
        "application/json",
        "no floats",
    ),
    "nested too deeply": (b'{"tx": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", "too deeply"),
    "wrong content type": (
        httpx.Request("POST", "/", json=VALID).content,
        "text/plain",
        "application/json",
    ),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_transaction_bodies_are_400_and_named(client: httpx.Client, name: str) -> None:
    body, content_type, fragment = BAD_BODIES[name]
    response = client.post("/v1/transactions", content=body, headers={"content-type": content_type})
    assert fragment in error_of(response, 400, "bad_request")
    still_serving(client)


def test_a_tampered_transaction_is_401(client: httpx.Client) -> None:
    signed = register_tx("cloister-test").to_json()
    signed["tx"]["payload"]["name"] = "mallory"
    error_of(client.post("/v1/transactions", json=signed), 401, "bad_signature")
    short = {**register_tx("cloister-test").to_json(), "signature": "00" * 10}
    error_of(client.post("/v1/transactions", json=short), 401, "bad_signature")
    assert client.get("/v1/head").json()["height"] == 0


def test_the_same_bytes_twice_is_a_409_replay(client: httpx.Client) -> None:
    body = httpx.Request("POST", "/", json=register_tx("cloister-test").to_json()).content
    headers = {"content-type": "application/json"}
    assert client.post("/v1/transactions", content=body, headers=headers).status_code == 201
    message = error_of(client.post("/v1/transactions", content=body, headers=headers), 409, "nonce_mismatch")
    assert "replay" in message
    assert client.get("/v1/head").json()["height"] == 1


@pytest.fixture
def small(embedded: EmbeddedLedger) -> Iterator[httpx.Client]:
    """A server that accepts bodies of at most 600 bytes (a signed registration is about 500)."""
    with (
        ThreadedServer(create_app(embedded, max_body_bytes=600)) as server,
        httpx.Client(base_url=server.url, timeout=10) as raw,
    ):
        yield raw


def test_an_oversized_body_is_413_by_content_length_and_by_counting(small: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    fits = httpx.Request("POST", "/", json=register_tx("cloister-test").to_json()).content
    assert len(fits) <= 600
    big = b'{"pad": "' + b"x" * 5000 + b'"}'
    error_of(small.post("/v1/transactions", content=big, headers=headers), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b" " * 100

    response = small.post("/v1/transactions", content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    error_of(response, 413, "payload_too_large")
    assert small.post("/v1/transactions", content=fits, headers=headers).status_code == 201


def test_unknown_routes_and_methods_are_json(client: httpx.Client) -> None:
    assert "/v1/nothing" in error_of(client.get("/v1/nothing"), 404, "bad_request")
    error_of(client.get("/"), 404, "bad_request")
    error_of(client.get("/v1/transactions"), 405, "bad_request")
    error_of(client.delete("/v1/head"), 405, "bad_request")
    still_serving(client)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/v1/events?limit=abc", "'limit'"),
        ("/v1/events?limit=0", "limit"),
        ("/v1/events?limit=1001", "limit"),
        ("/v1/events?after=-1", "'after'"),
        ("/v1/events?after=9223372036854775808", "cursor"),
        ("/v1/events?after=" + "9" * 5000, "64-bit"),
        ("/v1/events?after=1&after=2", "more than once"),
        ("/v1/events?cursor=3", "'cursor'"),
        ("/v1/blocks?start=x", "'start'"),
        ("/v1/offers?include_retired=maybe", "true or false"),
        ("/v1/offers?kind=", "empty"),
        ("/v1/head?x=1", "no parameters"),
        ("/v1/orders?state=sideways", "state"),
        ("/v1/offers?kind=cheese", "kind"),
        ("/v1/blocks/x/hash", "block height"),
        ("/v1/blocks/-1/hash", "block height"),
        ("/v1/blocks/" + "9" * 20 + "/hash", "block height"),
        ("/v1/blocks/0/hash?x=1", "no parameters"),
        ("/v1/orders/or-0000000000000000/endpoints?x=1", "no parameters"),
        (f"/v1/orders/or-0000000000000000/credits/{'cl' + 'zz' * 20}", "not an account address"),
    ],
)
def test_bad_query_parameters_are_400_and_named(client: httpx.Client, path: str, fragment: str) -> None:
    assert fragment in error_of(client.get(path), 400, "bad_request")
    still_serving(client)


def test_a_missing_record_is_404_not_found(client: httpx.Client) -> None:
    error_of(client.get(f"/v1/accounts/{Identity.generate().address}"), 404, "not_found")
    error_of(client.get("/v1/orders/or-0000000000000000"), 404, "not_found")
    for what in ("endpoints", "disputes", "timeouts", "resume-grants", f"credits/{Identity.generate().address}"):
        error_of(client.get(f"/v1/orders/or-0000000000000000/{what}"), 404, "not_found")
    assert "no block at height 1" in error_of(client.get("/v1/blocks/1/hash"), 404, "not_found")


def test_an_unexpected_failure_is_a_500_without_traceback_and_is_logged(
    client: httpx.Client, embedded: EmbeddedLedger, caplog: pytest.LogCaptureFixture
) -> None:
    with closing(sqlite3.connect(embedded.path)) as conn:
        conn.execute("DROP TABLE state")
    with caplog.at_level(logging.ERROR, logger="cloister.ledger.server"):
        response = client.get(f"/v1/accounts/{Identity.generate().address}")
    assert "unexpected" in error_of(response, 500, "error")
    assert "no such table" not in response.text
    assert any("unexpected error" in r.message and r.exc_info for r in caplog.records)
    assert client.get("/v1/head").status_code == 200


def test_typed_errors_cross_the_wire(served: ThreadedServer) -> None:
    signed = register_tx("cloister-test")
    with HttpLedger(served.url) as ledger:
        assert ledger.chain_id == "cloister-test"
        ledger.submit(signed)
        with pytest.raises(NonceMismatch) as caught:
            ledger.submit(signed)
        assert caught.value.details == {"expected": 2, "got": 1}
        tampered = SignedTransaction(signed.tx, signed.public_key, bytes(64))
        with pytest.raises(SignatureRejected):
            ledger.submit(tampered)
        with pytest.raises(RecordNotFound):
            ledger.order("or-0000000000000000")


# --- the client wrapper against things that are not a Cloister server ----------------------------------------


CANNED = {
    "/html-error": (502, b"<h1>bad gateway</h1>"),
    "/html-ok": (200, b"<html>fine</html>"),
    "/unknown-code": (418, b'{"error": {"code": "teapot", "message": "short and stout"}}'),
    "/no-error-body": (500, b'{"detail": "oops"}'),
    "/v1/head": (200, b'{"unexpected": "shape"}'),
}


class Canned(http.server.BaseHTTPRequestHandler):
    """A server that is not a Cloister ledger: answers each GET path with a canned status and body."""

    def do_GET(self) -> None:
        status, body = CANNED.get(self.path, (404, b"not here"))
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def canned() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_client_turns_foreign_answers_into_remote_errors(canned: str) -> None:
    with HttpClient(canned) as http_client:
        for path in ("/html-error", "/html-ok"):
            with pytest.raises(RemoteError, match="not JSON"):
                http_client.get_json(path)
        with pytest.raises(RemoteError, match="short and stout"):
            http_client.get_json("/unknown-code")
        with pytest.raises(RemoteError, match="HTTP 500 without a Cloister error body"):
            http_client.get_json("/no-error-body")
    with HttpLedger(canned) as ledger, pytest.raises(RemoteError, match="cannot read"):
        ledger.head()


def test_client_names_an_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with HttpClient(url, timeout=2) as http_client, pytest.raises(ServiceUnavailable) as caught:
        http_client.get_json("/v1/health")
    assert url in caught.value.message
    assert "cloister devnet status" in caught.value.message

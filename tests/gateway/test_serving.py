"""Serving through the gateway with honest replicas: the official OpenAI client, every consensus mode, receipts,
sealed requests the gateway cannot read, metering and settlement on the ledger."""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from tests.gateway.conftest import PRICE, GatewayServer, Live, live_deployment

from cloister.consensus.commitment import SignedCommitment
from cloister.consensus.receipt import ReceiptVerifyOptions, ReplicaRef, SignedReceipt, sign_receipt, verify_receipt
from cloister.consensus.requests import normalize_request
from cloister.consensus.sealing import open_response, seal_request
from cloister.consensus.verdict import decide
from cloister.crypto.digest import digest_bytes
from cloister.errors import CloisterError, SelectionMismatch
from cloister.gateway.store import receipts_digest
from cloister.ledger.genesis import UNITS_PER_TOKEN

pytestmark = pytest.mark.slow
QUESTION = "Who founded Quillport?"


class Recorder:
    """ASGI middleware keeping every byte the gateway received and sent (what an operator could log)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen = bytearray()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def received() -> Any:
            message = await receive()
            self.seen += message.get("body", b"")
            return message

        async def sent(message: Any) -> None:
            self.seen += message.get("body", b"") + repr(message.get("headers", "")).encode()
            await send(message)

        await self.app(scope, received, sent)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_deployment(tmp_path_factory.mktemp("serving"), 3) as running:
        yield running


def client(live: Live, **key: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=live.deployment.api_key(**key), max_retries=0)


def ask(question: str = QUESTION, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}], "max_tokens": 12, **extra}


def ledger_options(live: Live, data: bytes) -> ReceiptVerifyOptions:
    """What an independent verifier trusts: the gateway's key, and replica keys and head hashes from the ledger."""
    receipt = SignedReceipt.parse(data).receipt
    ledger = live.network.ledger
    replicas = {}
    for ref in receipt.replicas:
        machine = ledger.machine(ref.machine_id)
        replicas[ref.machine_id] = ReplicaRef(
            ref.machine_id, machine.loader_signing_key, digest_bytes(machine.tcb_evidence)
        )
    height = receipt.selection.head_height
    return ReceiptVerifyOptions(
        gateway_key=live.deployment.gateway_identity.public.signing_key,
        replicas=replicas,
        head_hashes={height: ledger.block_hash(height)},
    )


def fetch_receipt(live: Live, receipt_id: str) -> bytes:
    response = httpx.get(f"{live.url}/v1/receipts/{receipt_id}")
    assert response.status_code == 200
    return response.content


def test_the_openai_client_works_with_and_without_streaming(live: Live) -> None:
    api = client(live)
    raw = api.chat.completions.with_raw_response.create(model=live.deployment.order_id, **ask())
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert text and completion.usage is not None and completion.usage.completion_tokens > 0
    extension = completion.model_extra["cloister"]
    assert raw.headers["X-Cloister-Receipt"] == extension["receipt_id"]
    assert raw.headers["X-Cloister-Consensus"] == "single" == extension["mode"]
    assert raw.headers["X-Cloister-Agreed"] == "true"

    chunks = list(api.chat.completions.create(model=live.deployment.order_id, stream=True, **ask()))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text, "greedy decoding: the stream spells the same answer"
    verdict = chunks[-1].model_extra["cloister"]
    assert chunks[-1].choices == [] and verdict["agreed"] is True and "content" not in verdict
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == completion.usage.total_tokens
    verify_receipt(
        fetch_receipt(live, verdict["receipt_id"]), ledger_options(live, fetch_receipt(live, verdict["receipt_id"]))
    )


@pytest.mark.parametrize(
    ("mode", "commitments", "referees"),
    [("single", 1, 0), ("sampling:3", 3, 0), ("obfuscated:2", 3, 0), ("cross:1,2", 3, 2), ("cross:0,2", 1, 0)],
)
def test_every_mode_answers_with_a_receipt_that_verifies(
    live: Live, mode: str, commitments: int, referees: int
) -> None:
    api = client(live)
    nonce = "00" * 15 + "2a"
    raw = api.chat.completions.with_raw_response.create(
        model=live.deployment.order_id,
        extra_headers={"X-Cloister-Consensus": mode, "X-Cloister-Nonce": nonce},
        **ask(f"{QUESTION} ({mode})"),
    )
    extension = raw.parse().model_extra["cloister"]
    assert (extension["mode"], extension["agreed"], extension["client_nonce"]) == (mode, True, nonce)
    assert extension["nonce_drawn_by_gateway"] is False
    data = fetch_receipt(live, raw.headers["X-Cloister-Receipt"])
    check = verify_receipt(data, ledger_options(live, data))
    receipt = check.receipt
    assert check.checklist.ok and len(receipt.commitments) == commitments
    assert len(receipt.selection.referees) == referees and receipt.selection.client_nonce == bytes.fromhex(nonce)
    assert receipt.content_digest == digest_bytes(raw.parse().choices[0].message.content.encode())
    assert (
        receipt.request_digest
        == normalize_request({"model": live.deployment.order_id, **ask(f"{QUESTION} ({mode})")}).digest
    )
    verified = httpx.get(f"{live.url}/v1/receipts/{receipt.receipt_id}/verify").json()
    assert verified["ok"] is True and [c["name"] for c in verified["checks"]] == [i.name for i in check.checklist.items]


def test_a_receipt_with_any_byte_changed_fails(live: Live) -> None:
    raw = client(live).chat.completions.with_raw_response.create(
        model=live.deployment.order_id, extra_headers={"X-Cloister-Consensus": "sampling:3"}, **ask("flip me")
    )
    data = fetch_receipt(live, raw.headers["X-Cloister-Receipt"])
    options = ledger_options(live, data)
    verify_receipt(data, options)
    for index in range(0, len(data), 3):
        flipped = bytearray(data)
        flipped[index] ^= 0x01
        with pytest.raises(CloisterError):
            verify_receipt(bytes(flipped), options)
    served = httpx.get(f"{live.url}/v1/receipts/{raw.headers['X-Cloister-Receipt']}/verify").json()
    assert served["ok"] is True


def test_a_receipt_naming_replicas_the_rule_did_not_choose_fails(live: Live) -> None:
    """A gateway that sends a request to a replica of its choice cannot hide it, even signing with its real key."""
    raw = client(live).chat.completions.with_raw_response.create(model=live.deployment.order_id, **ask("steer me"))
    receipt = SignedReceipt.parse(fetch_receipt(live, raw.headers["X-Cloister-Receipt"])).receipt
    (chosen,) = receipt.selection.selected
    other = next(m for m in receipt.selection.candidates if m != chosen)
    request = {"model": live.deployment.order_id, **ask("steer me")}
    answer = httpx.post(
        f"{live.replicas[other].url}/cloister/v1/execute",
        json={"request": request, "role": "selected", "created_at": receipt.issued_at},
        timeout=120,
    ).json()
    signed = SignedCommitment.from_json(answer["commitment"])
    machine = live.network.ledger.machine(other)
    steered = dataclasses.replace(
        receipt,
        selection=dataclasses.replace(receipt.selection, selected=(other,)),
        replicas=(ReplicaRef(other, machine.loader_signing_key, digest_bytes(machine.tcb_evidence)),),
        commitments=(signed,),
        verdict=decide([signed.commitment]),
    )
    forged = sign_receipt(live.deployment.gateway_identity, steered).to_bytes()
    with pytest.raises(SelectionMismatch):
        verify_receipt(forged, ledger_options(live, forged))


def test_a_sealed_request_is_answered_without_the_gateway_reading_it(
    live: Live, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_question = "What is the launch code of the Zorblax moon base?"
    deployment = live.deployment
    key = next(e.deployment_key for e in live.network.ledger.endpoints(deployment.order_id) if e.removed_at is None)
    body = {"model": deployment.order_id, **ask(secret_question)}
    sealed, response_secret = seal_request(key, deployment.order_id, body)
    recorder: Recorder | None = None

    def wrap(app: Any) -> Any:
        nonlocal recorder
        recorder = Recorder(app)
        return recorder

    gateway = deployment.gateway(tmp_path / "sealed-gateway")
    with GatewayServer(gateway, wrap=wrap) as server:
        response = httpx.post(
            f"{server.url}/cloister/v1/sealed/chat/completions",
            json={"model": deployment.order_id, "sealed": base64.b64encode(sealed).decode()},
            headers={"Authorization": f"Bearer {deployment.api_key()}", "X-Cloister-Consensus": "sampling:3"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        opened = open_response(
            response_secret, deployment.order_id, answer["request_digest"], base64.b64decode(answer["sealed_response"])
        )
        text = opened["choices"][0]["message"]["content"]
        receipt_data = httpx.get(f"{server.url}/v1/receipts/{answer['cloister']['receipt_id']}").content
    assert answer["request_digest"] == normalize_request(body).digest
    check = verify_receipt(receipt_data, ledger_options(live, receipt_data))
    assert check.receipt.content_digest == digest_bytes(text.encode())
    assert check.receipt.selection.sealed_digest == digest_bytes(sealed)
    assert recorder is not None and len(recorder.seen) > len(sealed)
    stored = b"".join(path.read_bytes() for path in (tmp_path / "sealed-gateway").iterdir())
    logged = "\n".join(record.getMessage() for record in caplog.records).encode()
    for seen in (bytes(recorder.seen), stored, logged, receipt_data):
        assert secret_question.encode() not in seen and b"launch code" not in seen
        if text.strip():
            assert text.encode() not in seen


def test_usage_is_metered_and_settled_on_the_ledger(live: Live) -> None:
    network, deployment = live.network, live.deployment
    live.gateway.settle_pending()  # what earlier tests used, so only the payer's usage is left
    payer = network.party("payer")
    network.deposit_credit(payer, deployment.order_id, UNITS_PER_TOKEN)
    api = client(live, user=payer)
    receipts, tokens = [], 0
    for n in range(3):
        completion = api.chat.completions.create(model=deployment.order_id, **ask(f"count {n}"))
        assert completion.usage is not None
        receipts.append(completion.model_extra["cloister"]["receipt_id"])
        tokens += completion.usage.total_tokens
    ledger = network.ledger
    developer_before = ledger.account(deployment.developer.address).balance
    owner_before = ledger.account(deployment.model_owner.address).balance
    live.gateway.settle_pending()
    credit = ledger.credit(deployment.order_id, payer.address)
    charge = tokens * PRICE // 1000
    assert (credit.spent, credit.balance) == (charge, UNITS_PER_TOKEN - charge)
    share = charge * 1000 // 10000  # the model offer takes a 10% revenue share
    assert ledger.account(deployment.model_owner.address).balance - owner_before == share
    assert ledger.account(deployment.developer.address).balance - developer_before == charge - share
    settled = [
        e for e in ledger.events(limit=1000).events if e.kind == "usage.settled" and e.attrs["user"] == payer.address
    ]
    assert settled[-1].attrs["receipts_digest"] == receipts_digest(receipts)
    live.gateway.settle_pending()
    assert ledger.credit(deployment.order_id, payer.address).spent == charge, "nothing is settled twice"


def test_unsettled_usage_counts_against_the_credit(live: Live) -> None:
    network, deployment = live.network, live.deployment
    frugal = network.party("frugal")
    network.deposit_credit(frugal, deployment.order_id, 16 * PRICE // 1000)  # exactly one request's worst case
    api = client(live, user=frugal)
    api.chat.completions.create(model=deployment.order_id, **ask("once", max_tokens=16))
    with pytest.raises(openai.APIStatusError) as refused:
        api.chat.completions.create(model=deployment.order_id, **ask("twice", max_tokens=16))
    assert refused.value.status_code == 402
    assert refused.value.body["code"] == "insufficient_credit"


@pytest.mark.parametrize("sealed_for", ["another key", "another deployment"])
def test_a_sealed_request_the_replicas_cannot_open_is_400(live: Live, sealed_for: str) -> None:
    deployment = live.deployment
    key = next(e.deployment_key for e in live.network.ledger.endpoints(deployment.order_id))
    if sealed_for == "another key":
        key = X25519PrivateKey.generate().public_key().public_bytes_raw()
    order_id = deployment.order_id if sealed_for == "another key" else "or-00000000000000aa"
    sealed, _ = seal_request(key, order_id, {"model": deployment.order_id, **ask("Can you read this?")})
    response = httpx.post(
        f"{live.url}/cloister/v1/sealed/chat/completions",
        json={"model": deployment.order_id, "sealed": base64.b64encode(sealed).decode()},
        headers={"Authorization": f"Bearer {deployment.api_key()}"},
        timeout=120,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "sealed"
    models = httpx.get(f"{live.url}/v1/models", headers={"Authorization": f"Bearer {deployment.api_key()}"}).json()
    assert models["data"][0]["cloister"]["replicas"] == 3, "a refused request does not count against the replica"


def test_usage_left_at_shutdown_is_settled_on_the_way_out(live: Live, tmp_path: Path) -> None:
    network, deployment = live.network, live.deployment
    late = network.party("late")
    network.deposit_credit(late, deployment.order_id, UNITS_PER_TOKEN)
    with GatewayServer(deployment.gateway(tmp_path / "short-lived")) as server:
        api = openai.OpenAI(base_url=f"{server.url}/v1", api_key=deployment.api_key(user=late), max_retries=0)
        completion = api.chat.completions.create(model=deployment.order_id, **ask("before closing"))
        assert completion.usage is not None
        assert network.ledger.credit(deployment.order_id, late.address).spent == 0
    assert (
        network.ledger.credit(deployment.order_id, late.address).spent == completion.usage.total_tokens * PRICE // 1000
    )

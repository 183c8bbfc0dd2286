"""Misbehaving replicas under consensus: a liar is outvoted, disputed and slashed; a silent one is slashed for the
timeout and replaced; the user gets the honest answer either way, with a receipt that says what happened."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.gateway.conftest import Live, live_deployment
from tests.gateway.network import STAKE

from cloister.consensus.modes import parse_mode
from cloister.consensus.receipt import SignedReceipt, verify_receipt
from cloister.consensus.requests import normalize_request
from cloister.consensus.selection import Selection, select, selection_seed
from cloister.crypto.digest import digest_bytes
from cloister.ledger.genesis import ContractParams

pytestmark = pytest.mark.slow
PARAMS = ContractParams()
WRONG, SILENT = 0, 1  # indexes in the order's machines; the other three are honest


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    faults = {WRONG: "wrong-output", SILENT: "silent"}
    with live_deployment(tmp_path_factory.mktemp("faults"), 5, spares=0, faults=faults, commit_timeout=5.0) as running:
        yield running


def machine(live: Live, index: int) -> str:
    return live.deployment.order.machines[index]


def body(live: Live, question: str) -> dict[str, Any]:
    return {"model": live.deployment.order_id, "messages": [{"role": "user", "content": question}], "max_tokens": 8}


def nonce_where(live: Live, request: dict[str, Any], mode: str, wanted: Callable[[Selection], bool]) -> str:
    """A client nonce under which the selection rule picks what the test needs (the head must not move)."""
    head = live.network.ledger.head()
    digest = normalize_request(request).digest
    candidates = sorted(live.replicas)
    for n in range(100_000):
        nonce = n.to_bytes(16, "big")
        if wanted(select(selection_seed(head.hash, digest, nonce), candidates, parse_mode(mode))):
            return nonce.hex()
    raise AssertionError("no nonce gives that selection")


def chat(live: Live, request: dict[str, Any], mode: str, nonce: str, **kwargs: Any) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {live.deployment.api_key()}",
        "X-Cloister-Consensus": mode,
        "X-Cloister-Nonce": nonce,
    }
    return httpx.post(f"{live.url}/v1/chat/completions", json=request, headers=headers, timeout=120, **kwargs)


def honest_text(live: Live, request: dict[str, Any]) -> str:
    honest = {machine(live, i) for i in (2, 3, 4)}
    nonce = nonce_where(live, request, "single", lambda s: s.selected[0] in honest)
    answer = chat(live, request, "single", nonce).json()
    return str(answer["choices"][0]["message"]["content"])


def receipt_of(live: Live, receipt_id: str) -> SignedReceipt:
    data = httpx.get(f"{live.url}/v1/receipts/{receipt_id}").content
    verify_receipt(data)
    return SignedReceipt.parse(data)


def provider(live: Live, index: int) -> str:
    return live.network.ledger.machine(machine(live, index)).provider


def test_a_wrong_output_is_outvoted_disputed_and_slashed(live: Live) -> None:
    ledger, wrong, silent = live.network.ledger, machine(live, WRONG), machine(live, SILENT)
    request = body(live, "Who founded Quillport?")
    expected = honest_text(live, request)
    nonce = nonce_where(
        live,
        request,
        "sampling:3",
        lambda s: wrong in s.selected and silent not in s.selected and s.spares[0] != silent,
    )
    balances = {m: ledger.account(ledger.machine(m).provider).balance for m in live.replicas}

    response = chat(live, request, "sampling:3", nonce)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["choices"][0]["message"]["content"] == expected, "the user gets the majority's answer"
    assert answer["cloister"]["agreed"] is False and response.headers["X-Cloister-Agreed"] == "false"
    receipt = receipt_of(live, answer["cloister"]["receipt_id"]).receipt
    referee = receipt.selection.resampled[0]
    assert receipt.verdict.dissenters == (wrong,)
    assert set(receipt.verdict.majority) == {*receipt.selection.selected, referee} - {wrong}
    assert {c.machine_id: c.commitment.role for c in receipt.commitments}[referee] == "referee"
    (dispute,) = ledger.disputes(live.deployment.order_id)
    assert dispute.dispute_id == receipt.dispute_id == answer["cloister"]["dispute_id"]
    assert dispute.slashed == (wrong,) and set(dispute.rewarded) == set(receipt.verdict.majority)
    slashed = STAKE * PARAMS.dispute_slash_bps // 10000
    assert ledger.account(provider(live, WRONG)).stake == STAKE - slashed
    pot = slashed * PARAMS.referee_share_bps // 10000
    rest = (slashed - pot) // 3
    for m in receipt.verdict.majority:
        gained = ledger.account(ledger.machine(m).provider).balance - balances[m]
        assert gained == rest + (pot if m == referee else 0)


def test_a_streamed_lie_is_corrected_in_the_final_event(live: Live) -> None:
    wrong, silent = machine(live, WRONG), machine(live, SILENT)
    request = body(live, "What colour is the Zorblax moon?")
    expected = honest_text(live, request)
    nonce = nonce_where(live, request, "sampling:3", lambda s: s.selected[0] == wrong and silent not in s.order[:4])
    with httpx.Client(timeout=120) as http:
        headers = {"Authorization": f"Bearer {live.deployment.api_key()}", "X-Cloister-Consensus": "sampling:3"}
        response = http.post(
            f"{live.url}/v1/chat/completions",
            json={**request, "stream": True},
            headers={**headers, "X-Cloister-Nonce": nonce},
        )
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])["cloister"]
    assert final["agreed"] is False and final["dispute_id"]
    assert final["content"] == expected, "the stream came from the liar; the final event carries the majority answer"
    receipt = receipt_of(live, final["receipt_id"]).receipt
    assert receipt.content_digest == digest_bytes(expected.encode())
    assert receipt.verdict.dissenters == (wrong,)


def test_a_silent_replica_is_slashed_and_replaced(live: Live) -> None:
    ledger, wrong, silent = live.network.ledger, machine(live, WRONG), machine(live, SILENT)
    owner = live.deployment.developer.address
    request = body(live, "Tell me about Ada Fenwick.")
    nonce = nonce_where(
        live, request, "sampling:3", lambda s: silent in s.selected and wrong not in s.selected and s.spares[0] != wrong
    )
    owner_before = ledger.account(owner).balance

    response = chat(live, request, "sampling:3", nonce)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["cloister"]["agreed"] is True
    receipt = receipt_of(live, answer["cloister"]["receipt_id"]).receipt
    assert silent in receipt.selection.selected and len(receipt.selection.resampled) == 1
    assert silent not in {c.machine_id for c in receipt.commitments}
    assert len(receipt.commitments) == 3
    deadline = time.monotonic() + 30
    while not ledger.timeouts(live.deployment.order_id):  # reported in the background, after the answer
        assert time.monotonic() < deadline, "the timeout was never reported"
        time.sleep(0.2)
    (timeout,) = ledger.timeouts(live.deployment.order_id)
    amount = STAKE * PARAMS.timeout_slash_bps // 10000
    assert (timeout.machine_id, timeout.request_digest, timeout.amount) == (silent, receipt.request_digest, amount)
    assert ledger.account(provider(live, SILENT)).stake == STAKE - amount
    assert ledger.account(owner).balance - owner_before == amount, "the order owner is paid for the lost time"

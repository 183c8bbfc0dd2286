"""The web chat in a real browser (headless Debian Chromium, driven by Playwright) against a real gateway.

Nothing is mocked: an embedded ledger, three replica processes serving the tiny model under attested sim TCBs, the
gateway on 127.0.0.1. The page is driven as a person would (labels, keyboard) and checked on its DOM; a screenshot
of the answered, verified conversation is kept in ``test-artifacts/webchat.png``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from tests.gateway.conftest import Deployment, GatewayServer, make_deployment
from tests.gateway.network import make_network
from tests.gateway.replicas import start_replicas

from cloister.consensus.receipt import ReceiptVerifyOptions, SignedReceipt, verify_receipt
from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import digest_bytes
from cloister.ledger.genesis import UNITS_PER_TOKEN
from cloister.runtime.serving import Fault

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
ANSWER_TIMEOUT_MS = 180_000
"""Three CPU replicas of the tiny model answer in seconds; this only bounds a hung run."""


@dataclass
class ChatWorld:
    deployment: Deployment
    server: GatewayServer


@contextmanager
def chat_world(root: Path, *, faulty: bool = False) -> Iterator[ChatWorld]:
    """A deployment on three live replicas (the first one lying if ``faulty``), a user with credit, a gateway."""
    network = make_network(root / "net")
    try:
        deployment = make_deployment(network, 3)
        network.deposit_credit(deployment.user, deployment.order_id, 50 * UNITS_PER_TOKEN)
        liar = network.ledger.order(deployment.order_id).machines[0]
        faults: dict[str, Fault] = {liar: "wrong-output"} if faulty else {}
        replicas = start_replicas(network, deployment.order_id, faults)
        try:
            with GatewayServer(deployment.gateway(root / "gateway")) as server:
                _wait_for_replicas(server, deployment, len(replicas))
                yield ChatWorld(deployment, server)
        finally:
            for replica in replicas.values():
                replica.stop()
    finally:
        network.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatWorld]:
    with chat_world(tmp_path_factory.mktemp("webchat")) as honest:
        yield honest


@pytest.fixture(scope="module")
def faulty_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatWorld]:
    with chat_world(tmp_path_factory.mktemp("webchat-faulty"), faulty=True) as faulty:
        yield faulty


def _wait_for_replicas(server: GatewayServer, deployment: Deployment, count: int) -> None:
    """Until the gateway's health loop has seen every replica live (it re-reads the ledger every half second)."""
    headers = {"Authorization": f"Bearer {deployment.api_key()}"}
    deadline = time.monotonic() + 60
    live = 0
    while time.monotonic() < deadline:
        (model,) = httpx.get(f"{server.url}/v1/models", headers=headers).json()["data"]
        live = model["cloister"]["replicas"]
        if live == count:
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway sees {live} live replicas of {count}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own session storage) that fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, f"the page raised: {errors}"


def connect(page: Page, world: ChatWorld, key: str) -> None:
    page.goto(world.server.url + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Enter")


def ask(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")


def test_chat_answers_with_a_verified_receipt(world: ChatWorld, page: Page) -> None:
    deployment = world.deployment
    key = deployment.api_key()
    connect(page, world, key)
    expect(page.get_by_label("Deployment")).to_have_value(deployment.order_id)
    assert page.evaluate("sessionStorage.getItem('cloister.apiKey')") == key
    page.get_by_label("Consensus").select_option("sampling:3")

    with page.expect_request("**/v1/chat/completions") as sent:
        ask(page, "What colour is the Zorblax moon?")
    request = sent.value
    assert request.headers["authorization"] == f"Bearer {key}"
    assert request.headers["x-cloister-consensus"] == "sampling:3"
    assert request.post_data_json["stream"] is True
    assert request.post_data_json["messages"] == [{"role": "user", "content": "What colour is the Zorblax moon?"}]

    answer = page.locator(".message.assistant").last
    expect(answer.locator(".badge.agreed")).to_have_text("replicas agreed", timeout=ANSWER_TIMEOUT_MS)
    expect(answer).not_to_have_attribute("aria-busy", "true")
    expect(answer.locator(".badge.mode")).to_have_text("mode sampling:3")
    text = answer.locator(".text").inner_text()
    assert text and text != "(empty answer)"

    link = answer.get_by_role("link", name="receipt")
    receipt_id = link.inner_text().removeprefix("receipt ")
    assert receipt_id.startswith("rc-")
    assert link.get_attribute("href") == f"/v1/receipts/{receipt_id}"

    # The receipt the page links to is the gateway's signed record of this answer, built on the browser's nonce.
    data = httpx.get(f"{world.server.url}/v1/receipts/{receipt_id}").content
    gateway_key = deployment.gateway_identity.public.signing_key
    check = verify_receipt(data, ReceiptVerifyOptions(gateway_key=gateway_key))
    receipt = SignedReceipt.parse(data).receipt
    assert check.receipt == receipt
    assert receipt.mode == "sampling:3" and receipt.verdict.agreed
    assert len(receipt.commitments) == 3
    assert receipt.selection.client_nonce.hex() == request.headers["x-cloister-nonce"]
    assert shown_digest(answer) == receipt.content_digest  # what the user read is what the replicas committed

    answer.get_by_role("button", name="Verify").click()
    result = answer.locator(".proof .result")
    expect(result).to_contain_text("Receipt verified", timeout=30_000)
    checks = answer.locator(".checklist li")
    assert checks.count() >= 5
    expect(answer.locator(".checklist li.fail")).to_have_count(0)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webchat.png"), full_page=True)

    # The key survives a reload of the tab, and the conversation goes on with the history.
    page.reload()
    expect(page.get_by_label("API key")).to_have_value(key)
    expect(page.get_by_label("Deployment")).to_have_value(deployment.order_id)


def shown_digest(answer: Locator) -> str:
    """The digest of the answer text as the page holds it (``textContent``: no layout, no trimming)."""
    text = answer.locator(".text").evaluate("node => node.textContent")
    return digest_bytes(text.encode())


def test_a_lying_replica_is_outvoted_on_the_page(faulty_world: ChatWorld, page: Page) -> None:
    deployment = faulty_world.deployment
    connect(page, faulty_world, deployment.api_key(consensus="sampling:3"))
    expect(page.get_by_label("Deployment")).to_have_value(deployment.order_id)
    ask(page, "What colour is the Zorblax moon?")

    answer = page.locator(".message.assistant").last
    expect(answer.locator(".badge.disagreed").first).to_have_text(
        "replicas disagreed — majority answer", timeout=ANSWER_TIMEOUT_MS
    )
    expect(answer.locator(".badge.mode")).to_have_text("mode sampling:3")
    dispute = answer.locator(".badge.disagreed").nth(1)
    expect(dispute).to_have_text(re.compile(r"^dispute dp-"))
    receipt_id = answer.get_by_role("link", name="receipt").inner_text().removeprefix("receipt ")

    receipt = SignedReceipt.parse(httpx.get(f"{faulty_world.server.url}/v1/receipts/{receipt_id}").content).receipt
    (liar,) = receipt.verdict.dissenters
    assert liar == deployment.network.ledger.order(deployment.order_id).machines[0]
    assert f"dispute {receipt.dispute_id}" == dispute.inner_text()
    assert shown_digest(answer) == receipt.content_digest  # the majority's answer, whoever streamed first

    answer.get_by_role("button", name="Verify").click()
    expect(answer.locator(".proof .result")).to_contain_text("Receipt verified", timeout=30_000)


def test_a_follow_up_sends_the_conversation(world: ChatWorld, page: Page) -> None:
    connect(page, world, world.deployment.api_key())
    expect(page.get_by_label("Deployment")).to_have_value(world.deployment.order_id)
    ask(page, "Who founded Quillport?")
    first = page.locator(".message.assistant").nth(0)
    expect(first.locator(".badge.mode")).to_have_text("mode single", timeout=ANSWER_TIMEOUT_MS)
    expect(first).not_to_have_attribute("aria-busy", "true", timeout=ANSWER_TIMEOUT_MS)
    reply = first.locator(".text").inner_text()

    with page.expect_request("**/v1/chat/completions") as sent:
        ask(page, "And when?")
    messages = sent.value.post_data_json["messages"]
    assert messages == [
        {"role": "user", "content": "Who founded Quillport?"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And when?"},
    ]
    expect(page.locator(".message.assistant").nth(1).locator(".receipt-link")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)


def tamper_stored_receipt(world: ChatWorld, receipt_id: str) -> None:
    """Change the answer digest of a receipt in the gateway's own store, as someone with access to its disk could."""
    with closing(sqlite3.connect(world.server.gateway.store.path)) as db, db:
        (data,) = db.execute("SELECT data FROM receipts WHERE receipt_id = ?", (receipt_id,)).fetchone()
        signed = loads(data)
        signed["receipt"]["content_digest"] = digest_bytes(b"another answer")
        db.execute("UPDATE receipts SET data = ? WHERE receipt_id = ?", (canonical_json(signed), receipt_id))


def test_a_tampered_receipt_fails_verification_on_the_page(world: ChatWorld, page: Page) -> None:
    connect(page, world, world.deployment.api_key())
    expect(page.get_by_label("Deployment")).to_have_value(world.deployment.order_id)
    ask(page, "Who founded Quillport?")
    answer = page.locator(".message.assistant").last
    expect(answer.locator(".badge.agreed")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)  # answered and receipted
    tamper_stored_receipt(world, answer.get_by_role("link", name="receipt").inner_text().removeprefix("receipt "))

    answer.get_by_role("button", name="Verify").click()
    result = answer.locator(".proof .result")
    expect(result).to_contain_text("Receipt NOT verified: check “gateway signature” failed", timeout=30_000)
    expect(answer.locator(".checklist li.fail .name")).to_have_text("gateway signature")


def test_a_bad_key_shows_the_401(world: ChatWorld, page: Page) -> None:
    connect(page, world, "clk_not-a-key.at-all")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("HTTP 401")
    expect(alert).to_contain_text("API key")
    expect(page.get_by_label("Deployment")).to_be_disabled()

    ask(page, "hello?")
    expect(alert).to_contain_text("Choose a deployment first")
    expect(page.locator(".message")).to_have_count(0)


def test_no_credit_shows_the_402(world: ChatWorld, page: Page) -> None:
    broke = world.deployment.network.party("broke")
    connect(page, world, world.deployment.api_key(user=broke))
    expect(page.get_by_label("Deployment")).to_have_value(world.deployment.order_id)
    ask(page, "hello?")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("HTTP 402", timeout=30_000)
    expect(alert).to_contain_text("credit")
    failed = page.locator(".message.assistant.failed")
    expect(failed).to_contain_text("HTTP 402")

    page.get_by_role("button", name="Forget key").click()
    expect(page.get_by_label("API key")).to_have_value("")
    assert page.evaluate("sessionStorage.getItem('cloister.apiKey')") is None

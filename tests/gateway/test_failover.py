"""A replica killed with SIGKILL under load: only requests streaming from it fail; the gateway routes around it,
asks the contract to replace the silent machine, and the replacement serves once the keepers granted it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.gateway.conftest import Live, live_deployment
from tests.gateway.network import DEVNET_POLICY
from tests.gateway.replicas import start_replica

from cloister.client.keeper import Keeper
from cloister.consensus.receipt import SignedReceipt

pytestmark = pytest.mark.slow
WORKERS = 6


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    receipt_id: str | None
    error: str | None


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_deployment(tmp_path, 3, spares=1, heartbeat_timeout=10, heartbeats=1.0, stale_after=10) as running:
        yield running


def one_request(http: httpx.Client, live: Live, n: int, stream: bool) -> Outcome:
    started = time.monotonic()
    body = {
        "model": live.deployment.order_id,
        "messages": [{"role": "user", "content": f"Question number {n}?"}],
        "max_tokens": 24,
        "stream": stream,
    }
    headers = {"Authorization": f"Bearer {live.deployment.api_key()}"}
    try:
        response = http.post(f"{live.url}/v1/chat/completions", json=body, headers=headers)
    except httpx.HTTPError as exc:
        return Outcome(started, time.monotonic(), None, f"transport: {exc}")
    if response.status_code != 200:
        return Outcome(started, time.monotonic(), None, response.json()["error"]["code"])
    if not stream:
        return Outcome(started, time.monotonic(), response.json()["cloister"]["receipt_id"], None)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    last = json.loads(events[-2]) if events[-1] == "[DONE]" else json.loads(events[-1])
    if "error" in last:
        return Outcome(started, time.monotonic(), None, last["error"]["code"])
    return Outcome(started, time.monotonic(), last["cloister"]["receipt_id"], None)


def load(live: Live, stop: threading.Event, outcomes: list[Outcome], worker: int) -> None:
    n = 0
    with httpx.Client(timeout=120) as http:
        while not stop.is_set():
            outcomes.append(one_request(http, live, worker * 10_000 + n, stream=worker % 2 == 0))
            n += 1


def committers(live: Live, receipt_id: str) -> set[str]:
    data = httpx.get(f"{live.url}/v1/receipts/{receipt_id}").content
    return {c.machine_id for c in SignedReceipt.parse(data).receipt.commitments}


def wait_for(condition: object, what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_kill_9_under_load(live: Live) -> None:
    ledger, order_id = live.network.ledger, live.deployment.order_id
    victim = live.deployment.order.machines[0]
    outcomes: list[Outcome] = []
    stop = threading.Event()
    workers = [threading.Thread(target=load, args=(live, stop, outcomes, w)) for w in range(WORKERS)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: len(outcomes) >= 30, "some load")
        killed_at = time.monotonic()
        live.heartbeats.silenced.add(victim)
        live.replicas[victim].kill()
        wait_for(lambda: sum(o.started > killed_at for o in outcomes) >= 30, "load after the kill")
    finally:
        stop.set()
        for worker in workers:
            worker.join()

    failed = [o for o in outcomes if o.error is not None]
    assert len(failed) <= WORKERS, "at most the requests in flight at the kill fail"
    assert all(o.started <= killed_at and o.error == "replica_failed" for o in failed), failed
    after = [o for o in outcomes if o.started > killed_at + 1]
    assert after and all(o.receipt_id is not None for o in after)
    assert all(victim not in committers(live, str(o.receipt_id)) for o in after[-10:])
    before = [o for o in outcomes if o.ended < killed_at and o.receipt_id is not None]
    assert any(victim in committers(live, str(o.receipt_id)) for o in before), "the victim did serve before"

    # The victim stops heart-beating: the gateway asks the contract to replace it with the spare machine.
    wait_for(lambda: victim not in ledger.order(order_id).machines, "the contract to replace the dead machine")
    replacement = next(m for m in ledger.order(order_id).machines if m not in live.replicas)
    removed = {e.machine_id: e.removed_at for e in ledger.endpoints(order_id)}
    assert removed[victim] is not None
    events = ledger.events(limit=1000).events
    assert any(e.kind == "order.reassigned" and e.attrs["from"] == victim for e in events)

    # Its keepers grant the new machine; it joins the deployment's vault and serves.
    order = ledger.order(order_id)
    for name in ("modelowner", "engineowner"):
        Keeper(live.network.clients[name], DEVNET_POLICY, roots_by_platform=live.network.roots).review(order)
    joined = start_replica(live.network, order_id, replacement)
    try:
        headers = {"Authorization": f"Bearer {live.deployment.api_key()}"}
        wait_for(
            lambda: httpx.get(f"{live.url}/v1/models", headers=headers).json()["data"][0]["cloister"]["replicas"] == 3,
            "the gateway to see the replacement",
        )
        body = {"model": order_id, "messages": [{"role": "user", "content": "All three?"}], "max_tokens": 8}
        response = httpx.post(
            f"{live.url}/v1/chat/completions",
            json=body,
            headers={**headers, "X-Cloister-Consensus": "sampling:3"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert replacement in committers(live, response.json()["cloister"]["receipt_id"])
    finally:
        joined.stop()

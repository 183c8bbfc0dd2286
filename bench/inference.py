"""Serving through the gateway against ``model.generate`` in one process, per consensus mode; then 32 clients.

The network is a real devnet on 127.0.0.1, every part in its own process, as `cloister devnet up` runs it: the
embedded ledger served over HTTP, three `cloister node run` provider nodes (sim TEEs, staked), and
`cloister gateway run`. A model owner and an engine author publish (the model, the ``chat_inference`` bundle), a
developer deploys on three replicas, keepers grant, and each node's loader starts its replica (engine process +
replica server) and registers the endpoint. An end user with credit then streams the same greedy question through
the gateway under ``single``, ``sampling:3`` and ``cross:0.01,1``: tokens/s, time to the first token, and the
replica executions each mode actually cost (signed commitments in each receipt). The baseline is transformers'
``generate`` on the same prompt ids and thread count in this process, before the network starts (the first token:
``generate`` of one token). Last, 32 concurrent streaming clients on the tiny model: p50/p99 latency and errors.

    .venv/bin/python bench/inference.py --model tiny
    .venv/bin/python bench/inference.py --model real --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cloister.client.assets import smollm2_path
from cloister.client.deployments import deploy, fund_deployment
from cloister.client.devnet import Devnet
from cloister.client.keeper import Keeper
from cloister.client.sdk import Client
from cloister.consensus.apikeys import make_api_key
from cloister.consensus.receipt import SignedReceipt
from cloister.engines.bundle import builtin_engine, pack
from cloister.ledger.genesis import UNITS_PER_TOKEN
from cloister.ledger.records import Pricing, Restrictions
from cloister.runtime.archive import pack_folder
from inference_engine import QUESTION, in_process, tiny_model

MODES = ("single", "sampling:3", "cross:0.01,1")
REPLICAS = 3
THREADS = 1
FREE = Pricing("free", 0, 0)
"""Torch threads of the baseline: what each replica's engine uses by default."""


@dataclass(frozen=True)
class Answer:
    """One streamed answer as the client saw it."""

    seconds: float
    first_token: float
    tokens: int
    receipt_id: str


@dataclass(frozen=True)
class Served:
    """A deployment serving through the gateway, and what a client needs to call it."""

    url: str
    order_id: str
    api_key: str

    def body(self, tokens: int) -> dict[str, Any]:
        messages = [{"role": "user", "content": QUESTION}]
        return {"model": self.order_id, "messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5 min {five:.2f})"


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.5)


def _party(root: Path, name: str) -> Client:
    client = Client(home=root, account=name)
    client.create_account(name)
    client.fund(1000 * UNITS_PER_TOKEN)
    return client


def _publish_model(owner: Client, model: Path, root: Path) -> str:
    if model.is_dir():  # a Hugging Face folder travels as a tar, which the loader unpacks
        archive = root / "model.tar"
        pack_folder(model, archive)
        model = archive
    return owner.publish("model", model, name=model.name, pricing=FREE, restrictions=Restrictions()).offer_id


@contextmanager
def serving(root: Path, model: Path, ready_timeout: float) -> Iterator[Served]:
    """A devnet with three nodes and a gateway, the model deployed on all three, a user with credit."""
    devnet = Devnet(root)
    try:
        devnet.up()
        devnet.start_nodes(REPLICAS)
        info = devnet.start_gateway()
        gateway, url = str(info["gateway_address"]), str(info["gateway_url"])
        owner, author, developer, user = (_party(root, n) for n in ("modelowner", "author", "developer", "user"))
        _wait("node registration", lambda: len(developer.ledger.machines()) >= REPLICAS, 120)
        model_offer = _publish_model(owner, model, root)
        bundle = root / "chat_inference.bundle"
        bundle.write_bytes(pack(builtin_engine("chat_inference")))
        engine = author.publish("engine", bundle, pricing=FREE, restrictions=Restrictions()).offer_id
        order = deploy(
            developer,
            model=model_offer,
            engine=engine,
            replicas=REPLICAS,
            gateway=gateway,
            price_per_1k_tokens=UNITS_PER_TOKEN // 1000,
            deposit=20 * UNITS_PER_TOKEN,
        )
        policy, roots = devnet.trust()
        for keeper in (owner, author):
            Keeper(keeper, policy, roots).run_once()
        fund_deployment(user, order.order_id, 500 * UNITS_PER_TOKEN)
        served = Served(url, order.order_id, make_api_key(user.identity, gateway))
        _wait("three live replicas behind the gateway", lambda: _live_replicas(served) == REPLICAS, ready_timeout)
        yield served
    finally:
        devnet.down()


def _live_replicas(served: Served) -> int:
    headers = {"Authorization": f"Bearer {served.api_key}"}
    try:
        models = httpx.get(f"{served.url}/v1/models", headers=headers, timeout=10).json()["data"]
    except (httpx.HTTPError, KeyError, ValueError):
        return 0
    return sum(int(m["cloister"]["replicas"]) for m in models if m["id"] == served.order_id)


def stream(http: httpx.Client, served: Served, mode: str, tokens: int) -> Answer:
    """One streamed answer under ``mode``; raises on any HTTP or in-stream error."""
    started = time.perf_counter()
    first, final = 0.0, None
    headers = {"Authorization": f"Bearer {served.api_key}", "X-Cloister-Consensus": mode}
    with http.stream("POST", "/v1/chat/completions", json=served.body(tokens), headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"error event: {chunk['error']}")
            if not first and any(c.get("delta", {}).get("content") for c in chunk["choices"]):
                first = time.perf_counter() - started
            final = chunk if "usage" in chunk else final
    seconds = time.perf_counter() - started
    if final is None:
        raise RuntimeError("the stream ended without its usage chunk")
    return Answer(seconds, first, int(final["usage"]["completion_tokens"]), str(final["cloister"]["receipt_id"]))


def executions(http: httpx.Client, receipt_id: str) -> int:
    """Replica executions a request cost: the signed commitments its receipt holds."""
    return len(SignedReceipt.parse(http.get(f"/v1/receipts/{receipt_id}").content).receipt.commitments)


@dataclass(frozen=True)
class ModeResult:
    mode: str
    tokens: int
    seconds: float
    first_token: float
    cost: float


def measure(served: Served, tokens: int, runs: int) -> list[ModeResult]:
    """Medians of ``runs`` streamed answers per mode, the modes taking turns (so load drifts hit all alike),
    after a ``sampling:3`` warm-up that reaches every replica; and each mode's mean executions per request."""
    with httpx.Client(base_url=served.url, timeout=3600) as http:
        stream(http, served, f"sampling:{REPLICAS}", tokens)
        answers: dict[str, list[Answer]] = {mode: [] for mode in MODES}
        for _ in range(runs):
            for mode in MODES:
                answers[mode].append(stream(http, served, mode, tokens))
        return [
            ModeResult(
                mode,
                got[-1].tokens,
                statistics.median(a.seconds for a in got),
                statistics.median(a.first_token for a in got),
                statistics.mean(executions(http, a.receipt_id) for a in got),
            )
            for mode, got in answers.items()
        ]


async def _client(http: httpx.AsyncClient, served: Served, tokens: int, count: int) -> tuple[list[float], int]:
    latencies, errors = [], 0
    headers = {"Authorization": f"Bearer {served.api_key}", "X-Cloister-Consensus": "single"}
    for _ in range(count):
        started, done = time.perf_counter(), False
        try:
            async with http.stream("POST", "/v1/chat/completions", json=served.body(tokens), headers=headers) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if line.startswith("data: {") and '"error"' in line[:20]:
                        break
                    done = done or line == "data: [DONE]"
        except httpx.HTTPError:
            done = False
        if done:
            latencies.append(time.perf_counter() - started)
        else:
            errors += 1
    return latencies, errors


async def concurrent(served: Served, clients: int, each: int, tokens: int) -> tuple[list[float], int, float]:
    """``clients`` streaming clients, ``each`` requests one after the other; latencies, errors, wall seconds."""
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=served.url, timeout=3600, limits=limits) as http:
        started = time.perf_counter()
        results = await asyncio.gather(*(_client(http, served, tokens, each) for _ in range(clients)))
        wall = time.perf_counter() - started
    return [s for latencies, _ in results for s in latencies], sum(errors for _, errors in results), wall


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["real", "tiny"], default="tiny")
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens of each answer (greedy)")
    parser.add_argument("--runs", type=int, default=5, help="timed answers per mode")
    parser.add_argument("--clients", type=int, default=32, help="concurrent streaming clients (tiny model only)")
    parser.add_argument("--each", type=int, default=4, help="requests per concurrent client")
    args = parser.parse_args()
    print(f"load average at start: {load()}")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as scratch:
        root = Path(scratch)
        model = smollm2_path() if args.model == "real" else tiny_model(root)
        tokens, seconds = in_process(model, args.tokens, args.runs, THREADS)["model.generate (in process)"]
        _, first = in_process(model, 1, args.runs, THREADS)["model.generate (in process)"]
        print(f"baseline measured; load average {load()}")
        with serving(root / "devnet", model, 1800 if args.model == "real" else 300) as served:
            print(f"{REPLICAS} replicas serving {served.order_id}; load average {load()}")
            results = measure(served, args.tokens, args.runs)
            print(f"modes measured; load average {load()}")
            crowd = (
                asyncio.run(concurrent(served, args.clients, args.each, args.tokens)) if args.model == "tiny" else None
            )
            end_load = load()
    rate = tokens / seconds
    print(f"\n{'path':34} {'tokens':>6} {'tokens/s':>9} {'ratio':>6} {'TTFT ms':>8} {'ratio':>6} {'executions':>10}")
    print(
        f"{'model.generate (one process)':34} {tokens:6d} {rate:9.1f} {1:6.2f} {first * 1000:8.0f} {1:6.2f} {1:10.2f}"
    )
    for r in results:
        served_rate = r.tokens / r.seconds
        print(
            f"{'gateway, ' + r.mode:34} {r.tokens:6d} {served_rate:9.1f} {served_rate / rate:6.2f} "
            f"{r.first_token * 1000:8.0f} {r.first_token / first:6.2f} {r.cost:10.2f}"
        )
    if crowd is not None:
        latencies, errors, wall = crowd
        print(
            f"\n{args.clients} concurrent streaming clients x {args.each} requests (single, {args.tokens} tokens): "
            f"p50 {_percentile(latencies, 0.5) * 1000:.0f} ms, p99 {_percentile(latencies, 0.99) * 1000:.0f} ms, "
            f"{len(latencies) / wall:.1f} requests/s, errors {errors}"
        )
    print(f"load average at the end: {end_load}")


if __name__ == "__main__":
    main()

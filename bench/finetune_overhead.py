"""What a full Cloister order adds to LoRA fine-tuning: the same job as a plain PEFT script and as an order.

Both sides train the same model file on the same dataset with the same parameters, seed and thread count
(``demo_finetune_params()``, or ``tiny_finetune_params()`` on the tiny random model), and check that they produce
the same loss curve and the same evaluation answers.

(a) **plain**: a fresh process (spawned, like a script) imports torch/transformers/PEFT and runs the
    ``lora_finetune`` engine's own ``prepare`` and ``run`` on the plaintext files, as ``bench/finetune_plain.py``
    does: load, train, evaluate the base and the tuned model on the held-out questions, save adapter and metrics.
    No checkpoints, no encryption. Its time is counted from inside the process (interpreter start excluded).
(b) **cloister**: a fresh in-process market (embedded ledger, local blob store, simulated TEE vendor, one provider
    node): the model owner, a data owner and the engine author publish (hash, encrypt, upload, offer); the developer
    orders (escrow); each owner's keeper appraises the machine's TCB and seals a key grant; the node starts the
    order, its trusted loader opens the grants and fetches, decrypts, re-hashes and unpacks every input, runs the
    engine bundle in its own sandboxed process (the same job, plus encrypted checkpoints every
    ``checkpoint_every`` steps, the engine's default), seals the outputs to the developer, wipes the workspace,
    signs report and manifest, publishes the delivery and completes the order (settlement from escrow). Market
    setup (ledger, accounts, machine registration, packing the engine) is not counted; neither is the developer
    fetching and opening the result afterwards (shown apart), which is how the loss curves are compared.

    .venv/bin/python bench/finetune_overhead.py                         # SmolLM2-135M-Instruct GGUF, once
    .venv/bin/python bench/finetune_overhead.py --model tiny --repeat 3 # the tiny random model, seconds each
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloister.attest.der import parse_pem_certificates
from cloister.attest.policy import AppraisalPolicy
from cloister.attest.sim import SimVendor
from cloister.client.assets import demo_dataset_path, smollm2_path
from cloister.client.keeper import Keeper
from cloister.client.orders import create_order, fetch_result
from cloister.client.sdk import Client
from cloister.engines.bundle import builtin_engine, pack
from cloister.engines.job import JobSpec
from cloister.engines.recipes import demo_finetune_params, tiny_finetune_params
from cloister.engines.runner import LOG_FILE, THREAD_VARS
from cloister.errors import InvalidState
from cloister.ledger.amounts import parse_amount
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import ContractParams, Genesis, policy_json
from cloister.ledger.records import COMPLETED, Pricing, Restrictions
from cloister.node.controller import ProviderNode
from cloister.node.keys import load_or_create_loader_identity
from cloister.node.platform import SimPlatform
from cloister.runtime.archive import pack_folder
from cloister.runtime.loader import PreparedJob, RunOutcome, TrustedLoader
from cloister.storage import LocalBlobStore

POLICY = AppraisalPolicy.packaged("devnet")
PARTIES = ("model-owner", "data-owner", "engine-author", "developer", "provider")
# The Cloister order's phases, each with the plain script's phases that do the same work (none: pure overhead).
PHASES: dict[str, tuple[str, ...]] = {
    "publish": (),
    "order": (),
    "grant": (),
    "prepare": (),
    "engine: start + import": ("import", "prepare"),
    "engine: load": ("load",),
    "engine: train": ("train",),
    "engine: evaluate": ("evaluate",),
    "engine: save": ("save",),
    "loader around engine": (),
    "seal + sign": (),
    "deliver": (),
    "start + settle": (),
}
COMPARED = ("loss_curve", "evaluation")
ENGINE_PHASES = ("load", "train", "evaluate", "save")
_PHASE_RE = re.compile(r"(\w+) ([0-9.]+) s")


@dataclass(frozen=True)
class Side:
    """One run of one side: its counted seconds per phase, and the engine's metrics."""

    phases: dict[str, float]
    metrics: dict[str, Any]

    @property
    def total(self) -> float:
        return sum(self.phases.values())


# --- (a) the plain script -------------------------------------------------------------------------------------


def _plain_in_process(model: str, threads: int, params: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """The plain script's work, run in a fresh process: the heavy imports, then the engine's functions."""
    started = time.perf_counter()
    from cloister.engines.lora_finetune.lora_engine.config import prepare
    from cloister.engines.lora_finetune.lora_engine.run import run

    imported = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="finetune-plain-") as scratch:
        root = Path(scratch)
        job = JobSpec(
            inputs={"model": (Path(model),), "datasets": (demo_dataset_path(),)},
            params=params,
            outputs_dir=root / "outputs",
            checkpoint_dir=root / "checkpoints",
            progress_file=root / "progress.jsonl",
        )
        began = time.perf_counter()
        prepared = prepare(job)
        checked = time.perf_counter() - began
        outcome = run(job, prepared, threads=threads)
    return {"import": imported, "prepare": checked, **outcome.seconds}, outcome.metrics


def plain(model: Path, threads: int, params: dict[str, Any]) -> Side:
    """Run the plain script in a spawned process with the thread variables the engine process gets."""
    os.environ.update({name: str(threads) for name in THREAD_VARS})
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        phases, metrics = pool.submit(
            _plain_in_process, str(model), threads, {**params, "checkpoint_every": 0}
        ).result()
    return Side(phases, metrics)


# --- (b) the Cloister order -----------------------------------------------------------------------------------


@contextmanager
def _timed(
    owner: type, method: str, phase: str, seconds: dict[str, float], after: Callable[..., None] | None = None
) -> Iterator[None]:
    """Time every call of ``owner.method`` into ``seconds[phase]`` (the real method still runs), then restore it.

    ``after(result, *args)`` sees each call's result and arguments, e.g. to read what the call leaves behind.
    """
    original: Callable[..., Any] = getattr(owner, method)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            result = original(*args, **kwargs)
        finally:
            seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - began
        if after is not None:
            after(result, *args)
        return result

    setattr(owner, method, timed)
    try:
        yield
    finally:
        setattr(owner, method, original)


def _engine_phases(log: Path) -> dict[str, float]:
    """The phases the engine prints on success (``lora_finetune done: N steps; load 1.2 s, train ...``)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    done = [line for line in text.splitlines() if line.startswith("lora_finetune done:")]
    if not done:
        raise InvalidState(f"the engine log {log} has no 'lora_finetune done:' line; has the engine's output changed?")
    return {name: float(value) for name, value in _PHASE_RE.findall(done[-1].partition(";")[2])}


class Clock:
    """Wall time of named phases of the Cloister side."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - began


def _order_params(params: dict[str, Any], checkpoint_every: int | None) -> dict[str, Any]:
    """The same parameters on the ledger: floats as decimal strings, because canonical JSON has none."""
    chosen = params if checkpoint_every is None else {**params, "checkpoint_every": checkpoint_every}
    return {key: (repr(value) if isinstance(value, float) else value) for key, value in chosen.items()}


@dataclass
class Market:
    """A one-machine market in ``root``; building it is setup, not counted."""

    root: Path
    threads: int

    def __post_init__(self) -> None:
        self.root.mkdir(mode=0o700, parents=True)
        vendor = SimVendor.generate()
        contract = ContractParams(
            faucet_limit=parse_amount(1_000_000), attestation_policy=policy_json(POLICY), sim_roots=(vendor.root_pem,)
        )
        genesis = Genesis("cloister-bench", int(time.time()), contract)
        self.ledger = EmbeddedLedger.create(self.root / "ledger.db", genesis)
        self.store = LocalBlobStore(self.root / "blobs")
        self.roots = {"sim": tuple(parse_pem_certificates(vendor.root_pem.encode()))}
        self.clients = {name: self._party(name) for name in PARTIES}
        folder = self.root / "provider" / "node"
        self.node = ProviderNode(
            ledger=self.ledger,
            store=self.store,
            operator=self.clients["provider"].identity,
            loader=load_or_create_loader_identity(folder),
            platform=SimPlatform(vendor, "bench-chip"),
            folder=folder,
            price_per_hour=parse_amount(1),
            threads=self.threads,
        )
        self.node.register()
        self.bundle = self.root / "lora_finetune.bundle"
        self.bundle.write_bytes(pack(builtin_engine("lora_finetune")))

    def _party(self, name: str) -> Client:
        client = Client(home=self.root / name, ledger=self.ledger, store=self.store)
        client.create_account(name)
        client.fund(parse_amount(1000))
        return client

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.ledger.close()


def cloister(model: Path, params: dict[str, Any], market: Market) -> tuple[Side, float]:
    """Run the job as an order on ``market``; return its counted phases and the developer's fetch time."""
    clock, people = Clock(), market.clients
    with clock("publish"):
        engine = people["engine-author"].publish(
            "engine", market.bundle, pricing=Pricing("fixed", parse_amount(1), 0), restrictions=Restrictions()
        )
        assert engine.content_digest is not None  # content offers always carry one
        model_offer = people["model-owner"].publish(
            "model",
            model,
            name=model.name,
            pricing=Pricing("per_hour", parse_amount(2), 0),
            restrictions=Restrictions(),
        )
        dataset = people["data-owner"].publish(
            "dataset",
            demo_dataset_path(),
            pricing=Pricing("fixed", parse_amount(5), 0),
            restrictions=Restrictions(engine_digests=(engine.content_digest,)),
        )
    with clock("order"):
        order = create_order(
            people["developer"],
            model=model_offer.offer_id,
            datasets=[dataset.offer_id],
            engine=engine.offer_id,
            params=params,
            lease_hours=1,
            deposit=parse_amount(50),
        )
    with clock("grant"):
        for owner in ("model-owner", "data-owner", "engine-author"):
            Keeper(people[owner], POLICY, market.roots).run_once()
    inner: dict[str, float] = {}
    inside: dict[str, float] = {}

    def ran(outcome: RunOutcome, _loader: TrustedLoader, prepared: PreparedJob, *rest: Any) -> None:
        # Read before finish() wipes the workspace: the engine process's wall time and its own phases.
        inside.update(_engine_phases(prepared.workspace.path / LOG_FILE))
        inside["process"] = outcome.seconds

    with ExitStack() as stack:
        for cls, method, phase, after in (
            (TrustedLoader, "prepare", "prepare", None),
            (TrustedLoader, "run", "run", ran),
            (TrustedLoader, "finish", "seal + sign", None),
            (ProviderNode, "_publish", "deliver", None),
        ):
            stack.enter_context(_timed(cls, method, phase, inner, after))
        with clock("node"):
            market.node.run_ready()
    done = market.ledger.order(order.order_id)
    if done.state != COMPLETED or "process" not in inside:
        raise InvalidState(f"order {order.order_id} ended {done.state}, not completed; see the node's log above")
    process = inside.pop("process")
    node = clock.seconds.pop("node")
    phases = {
        **clock.seconds,
        "prepare": inner["prepare"],
        "engine: start + import": process - sum(inside.values()),
        **{f"engine: {name}": inside[name] for name in ENGINE_PHASES},
        "loader around engine": inner["run"] - process,
        "seal + sign": inner["seal + sign"],
        "deliver": inner["deliver"],
        "start + settle": node - sum(inner.values()),
    }
    began = time.perf_counter()
    out = market.root / "result"
    fetch_result(people["developer"], order.order_id, out, policy=POLICY, roots=market.roots)
    fetched = time.perf_counter() - began
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return Side(phases, metrics), fetched


# --- the comparison -------------------------------------------------------------------------------------------


def _model(kind: str, root: Path) -> tuple[Path, Path]:
    """The model file the plain script reads, and the one the model owner publishes (a tiny folder as a tar)."""
    if kind == "real":
        path = smollm2_path()
        return path, path
    from cloister.engines.tiny import make_tiny_model

    lines = demo_dataset_path().read_text(encoding="utf-8").splitlines()
    corpus = [message["content"] for line in lines for message in json.loads(line)["messages"]]
    folder = make_tiny_model(root / "tiny-llama", corpus)
    archive = root / "tiny-llama.tar"
    pack_folder(folder, archive)
    return folder, archive


def _same_work(a: Side, b: Side) -> str:
    differ = [key for key in COMPARED if a.metrics.get(key) != b.metrics.get(key)]
    return "identical" if not differ else f"DIFFERENT ({', '.join(differ)}): the comparison is not like for like"


def _mean(sides: list[Side]) -> dict[str, float]:
    return {name: statistics.fmean(side.phases[name] for side in sides) for name in sides[0].phases}


def _report(plains: list[Side], orders: list[Side], fetches: list[float]) -> None:
    base, full = _mean(plains), _mean(orders)
    base_total, full_total = sum(base.values()), sum(full.values())
    overhead = full_total - base_total
    print(f"\nmeans over {len(plains)} run(s)")
    print(f"{'phase':<24} {'plain':>8} {'cloister':>9} {'overhead':>9} {'share':>7}")
    for name, counterparts in PHASES.items():
        mine, theirs = full[name], sum(base[part] for part in counterparts)
        extra = mine - theirs
        share = 100 * extra / overhead if overhead else 0.0
        print(f"  {name:<22} {theirs:8.1f} {mine:9.1f} {extra:9.1f} {share:6.1f} %")
    print(f"  {'total':<22} {base_total:8.1f} {full_total:9.1f} {overhead:9.1f}")
    print(f"  (not counted: developer fetches, verifies and opens the result {statistics.fmean(fetches):.1f} s)")
    per_order = full_total - full["publish"]
    print(f"\nwall time: plain {base_total:.1f} s, cloister {full_total:.1f} s")
    print(f"ratio cloister / plain: {full_total / base_total:.3f}")
    print(f"ratio without publishing (done once per offer, not per order): {per_order / base_total:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["real", "tiny"], default="real")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side, alternating")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--checkpoint-every", type=int, help="the order's checkpoint interval in steps (default: the engine's)"
    )
    args = parser.parse_args()
    params = demo_finetune_params() if args.model == "real" else tiny_finetune_params()
    print(f"model {args.model}, {args.threads} threads, {args.repeat} run(s) per side")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    plains: list[Side] = []
    orders: list[Side] = []
    fetches: list[float] = []
    with tempfile.TemporaryDirectory(prefix="finetune-overhead-") as scratch:
        plain_model, published_model = _model(args.model, Path(scratch))
        for index in range(args.repeat):
            plains.append(plain(plain_model, args.threads, params))
            market = Market(Path(scratch) / f"market-{index}", args.threads)
            try:
                order, fetched = cloister(published_model, _order_params(params, args.checkpoint_every), market)
            finally:
                market.close()
            orders.append(order)
            fetches.append(fetched)
            steps = order.metrics["loss_curve"][-1]["step"]
            print(
                f"run {index + 1}: plain {plains[-1].total:.1f} s, cloister {order.total:.1f} s, "
                f"ratio {order.total / plains[-1].total:.3f}; {steps} steps; "
                f"loss curve and answers {_same_work(plains[-1], order)}"
            )
    _report(plains, orders, fetches)
    print("load average after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()

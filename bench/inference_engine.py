"""Decoding speed of the ``chat_inference`` engine, against ``model.generate`` in one process.

Three ways to answer the same greedy request on the same model and thread count: transformers' ``generate`` in
this process (the baseline), the engine's own decoding loop in this process (what determinism and stop handling
cost), and the engine as the loader runs it, over HTTP on 127.0.0.1 (what the process and HTTP add). Prints
tokens per second and, for the HTTP stream, the time to the first token.

    .venv/bin/python bench/inference_engine.py --model tiny
    .venv/bin/python bench/inference_engine.py --model real --tokens 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from cloister.client.assets import demo_dataset_path, smollm2_path
from cloister.engines.bundle import builtin_engine
from cloister.engines.job import JobSpec, read_progress
from cloister.engines.runner import start_engine

QUESTION = "Write a short story about a dragon who learns to cook."


def tiny_model(folder: Path) -> Path:
    from cloister.engines.tiny import make_tiny_model

    lines = demo_dataset_path().read_text(encoding="utf-8").splitlines()
    corpus = [message["content"] for line in lines for message in json.loads(line)["messages"]]
    return make_tiny_model(folder / "tiny-llama", corpus)


def _timed(runs: int, answer: Callable[[], int]) -> tuple[int, float]:
    """Tokens of the last run and the median seconds over ``runs`` runs (after one warm-up)."""
    answer()
    seconds, tokens = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        tokens = answer()
        seconds.append(time.perf_counter() - started)
    return tokens, statistics.median(seconds)


def in_process(model_path: Path, tokens: int, runs: int, threads: int) -> dict[str, tuple[int, float]]:
    import torch

    from cloister.engines.chat_inference.chat_engine.config import ServeConfig
    from cloister.engines.chat_inference.chat_engine.decode import Completion, Decoding, generate, prompt_ids
    from cloister.engines.chat_inference.chat_engine.model import load

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    loaded = load(ServeConfig(model_path, (), 0, threads, 0))
    prompt = prompt_ids(loaded, [{"role": "user", "content": QUESTION}])
    ids = torch.tensor([prompt])

    def hf_generate() -> int:
        with torch.inference_mode():
            out = loaded.model.generate(  # type: ignore[operator]
                ids, max_new_tokens=tokens, do_sample=False, pad_token_id=loaded.tokenizer.eos_token_id
            )
        return int(out.shape[1] - ids.shape[1])

    def engine_loop() -> int:
        *_, done = generate(loaded, prompt, Decoding(tokens, 0.0, 1.0, 0, ()), lambda: False)
        assert isinstance(done, Completion)
        return len(done.token_ids)

    return {
        "model.generate (in process)": _timed(runs, hf_generate),
        "engine loop (in process)": _timed(runs, engine_loop),
    }


def over_http(model_path: Path, tokens: int, runs: int, threads: int, root: Path) -> dict[str, tuple[int, float]]:
    workspace = root / "workspace"
    workspace.mkdir(mode=0o700)
    job = JobSpec({"model": (model_path,)}, {"threads": threads}, workspace / "o", workspace / "c", workspace / "p")
    body = {"model": "m", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": tokens}
    with start_engine(builtin_engine("chat_inference"), job, workspace=workspace, threads=threads) as process:
        while not (ready := [e for e in read_progress(job.progress_file) if e.get("ready")]):
            if not process.running():
                raise SystemExit((workspace / "engine.log").read_text())
            time.sleep(0.2)
        client = httpx.Client(base_url=f"http://127.0.0.1:{ready[0]['port']}", timeout=3600)

        def plain() -> int:
            return len(client.post("/v1/chat/completions", json=body).json()["cloister"]["token_ids"])

        first: list[float] = []

        def streamed() -> int:
            started, seen, last = time.perf_counter(), False, ""
            with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                for line in response.iter_lines():
                    if not seen and '"content": "' in line and '"content": ""' not in line:
                        first.append(time.perf_counter() - started)
                        seen = True
                    last = line if line.startswith("data: {") else last
            return len(json.loads(last[6:])["cloister"]["token_ids"])

        results = {"engine over HTTP": _timed(runs, plain), "engine over HTTP, streamed": _timed(runs, streamed)}
    print(f"time to first token (HTTP stream, median): {statistics.median(first[1:]) * 1000:.0f} ms")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["real", "tiny"], default="tiny")
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens of each answer (greedy)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the engine's default is 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inference-engine-") as scratch:
        root = Path(scratch)
        model = smollm2_path() if args.model == "real" else tiny_model(root)
        results = in_process(model, args.tokens, args.runs, args.threads)
        results.update(over_http(model, args.tokens, args.runs, args.threads, root))
    baseline = results["model.generate (in process)"]
    print(f"{'method':32} {'tokens':>6} {'seconds':>8} {'tokens/s':>9} {'vs generate':>11}")
    for name, (tokens, seconds) in results.items():
        rate = tokens / seconds
        ratio = rate / (baseline[0] / baseline[1])
        print(f"{name:32} {tokens:6d} {seconds:8.3f} {rate:9.1f} {ratio:10.2f}x")


if __name__ == "__main__":
    main()

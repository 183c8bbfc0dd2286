"""The chat inference engine on the real SmolLM2-135M-Instruct GGUF: a short, right answer, streamed the same."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from cloister.client.assets import smollm2_path
from cloister.engines.bundle import builtin_engine
from cloister.engines.job import JobSpec, read_progress
from cloister.engines.runner import start_engine


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smollm2_names_the_capital_of_france(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir(mode=0o700)
    job = JobSpec({"model": (smollm2_path(),)}, {}, workspace / "out", workspace / "ckpt", workspace / "progress")
    request = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in a few words."}],
        "max_tokens": 16,
    }
    with start_engine(builtin_engine("chat_inference"), job, workspace=workspace, threads=1) as process:
        while not (ready := [e for e in read_progress(job.progress_file) if e.get("ready")]):
            assert process.running(), (workspace / "engine.log").read_text()
            time.sleep(0.5)
        with httpx.Client(base_url=f"http://127.0.0.1:{ready[0]['port']}", timeout=600) as client:
            assert client.get("/health").json()["context"] == 8192
            body = client.post("/v1/chat/completions", json=request).json()
            with client.stream("POST", "/v1/chat/completions", json={**request, "stream": True}) as stream:
                chunks = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")]
    answer = body["choices"][0]["message"]["content"]
    assert "Paris" in answer and body["choices"][0]["finish_reason"] == "stop"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == answer
    assert chunks[-1]["cloister"]["token_ids"] == body["cloister"]["token_ids"]

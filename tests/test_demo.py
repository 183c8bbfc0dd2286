"""`cloister demo` on the real SmolLM2-135M: the fine-tuning and serving story `make demo` tells, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloister.client.assets import smollm2_path


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_fine_tunes_and_serves_the_real_model_and_everyone_can_verify(tmp_path: Path) -> None:
    model = smollm2_path()
    assert model.stat().st_size > 50_000_000, "the real GGUF, not a stand-in"
    env = {**os.environ, "CLOISTER_HOME": str(tmp_path / "unused"), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "cloister", "demo", "--demo-home", str(tmp_path / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    out = result.stdout
    for owner in ("alice", "clinic", "lab", "eve"):
        assert f"{owner}" in out
    assert out.count(": granted") == 4 + 9, "every owner's keeper granted to the fine-tune and the 3 replicas"
    assert "completed" in out and "✓ signature" in out and "✓ manifest inputs" in out
    assert "✗" not in out
    assert "the provider is refused the adapter" in out
    assert "held-out question" in out and "fine-tuned :" in out
    assert "answer   :" in out and "✓ selection" in out, "the openai client's answer came with a verified receipt"
    assert "out-voted" in out and "rigged" in out, "the tampering replica was caught"
    assert "dave's credit:" in out and "completed after" in out
    assert "ledger replayed from genesis" in out
    assert not (tmp_path / "demo" / "devnet" / "ledger.pid").exists(), "the demo leaves nothing running"

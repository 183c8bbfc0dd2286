"""`cloister demo` on the real SmolLM2-135M: the fine-tuning story `make demo` tells, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloister.client.assets import smollm2_path


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_fine_tunes_the_real_model_and_everyone_can_verify(tmp_path: Path) -> None:
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
    assert out.count(": granted") == 4, "every owner's keeper granted after appraising the machine"
    assert "completed" in out and "✓ signature" in out and "✓ manifest inputs" in out
    assert "✗" not in out
    assert "the provider is refused the adapter" in out
    assert "held-out question" in out and "fine-tuned :" in out
    assert "ledger replayed from genesis" in out
    assert not (tmp_path / "demo" / "devnet" / "ledger.pid").exists(), "the demo leaves nothing running"

"""`cloister demo` on the real SmolLM2-135M model: the story `make demo` tells."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cloister.client.assets import smollm2_path


def test_demo_tells_the_story_on_the_real_model(tmp_path: Path) -> None:
    model = smollm2_path()
    assert model.stat().st_size > 50_000_000, "the real GGUF, not a stand-in"
    env = {**os.environ, "CLOISTER_HOME": str(tmp_path / "unused"), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "cloister", "demo", "--demo-home", str(tmp_path / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "SmolLM2-135M-Instruct" in out
    assert "cloister-support-chat" in out
    assert "alice downloaded and verified" in out
    assert "bob is refused" in out
    assert "replayed 8 blocks from genesis" in out
    assert not (tmp_path / "demo" / "devnet" / "ledger.pid").exists(), "the demo shuts its devnet down"

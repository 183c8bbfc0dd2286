"""Fixtures for engine tests: a small hand-written engine folder and the tiny random chat model."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cloister.client.assets import demo_dataset_path

MANIFEST = """\
name = "probe"
version = "1.0.0"
entrypoint = "probe.main"
description = "reports what it sees, for runner tests"

[inputs.data]
description = "any files"
min = 0

[outputs."seen.json"]
description = "environment, working directory and job as the engine saw them"

[parameters.exit_code]
type = "int"
default = 0
description = "exit with this code after writing seen.json"

[parameters.sleep]
type = "float"
default = 0.0
min = 0
description = "seconds to sleep before exiting"
"""

PROBE_MAIN = '''\
"""Writes what the engine process sees into its outputs folder."""

import json
import os
import sys
import time
from pathlib import Path

job = json.loads(Path(os.environ["CLOISTER_JOB"]).read_text())
seen = {"env": dict(os.environ), "cwd": os.getcwd(), "job": job}
out = Path(job["outputs_dir"]) / "seen.json"
out.write_text(json.dumps(seen))
with open(job["progress_file"], "a") as progress:
    progress.write(json.dumps({"step": 1, "loss": 0.5}) + "\\n")
print("probe ran")
time.sleep(job["params"]["sleep"])
if job["params"]["exit_code"]:
    print("probe failing on purpose", file=sys.stderr)
sys.exit(job["params"]["exit_code"])
'''


def write_probe_engine(folder: Path) -> Path:
    """A complete small engine: manifest, a package with a module entry point, and a data file."""
    (folder / "probe").mkdir(parents=True)
    (folder / "engine.toml").write_text(MANIFEST)
    (folder / "probe" / "__init__.py").write_text("")
    (folder / "probe" / "main.py").write_text(PROBE_MAIN)
    (folder / "probe" / "data.txt").write_text(textwrap.dedent("some\nresource\n"))
    return folder


@pytest.fixture
def probe_engine(tmp_path: Path) -> Path:
    return write_probe_engine(tmp_path / "probe-engine")


def demo_corpus() -> list[str]:
    lines = demo_dataset_path().read_text(encoding="utf-8").splitlines()
    return [message["content"] for line in lines for message in json.loads(line)["messages"]]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama chat model with a tokenizer trained on the demo data (a Hugging Face folder)."""
    from cloister.engines.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", demo_corpus())

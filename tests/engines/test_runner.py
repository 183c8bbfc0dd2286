"""The loader ↔ engine contract: job.json, progress lines, and the sandboxed engine process."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from cloister.engines.job import JOB_ENV, JobSpec, append_progress, read_progress
from cloister.engines.runner import JOB_FILE, THREAD_VARS, run_engine, start_engine
from cloister.errors import EngineFailed, EngineTimeout, JobInvalid, MalformedInput


def _job(root: Path, **params: object) -> JobSpec:
    return JobSpec(
        inputs={"data": (root / "inputs" / "a.txt",)},
        params=params,
        outputs_dir=root / "out",
        checkpoint_dir=root / "ckpt",
        progress_file=root / "progress.jsonl",
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir(mode=0o700)
    (folder / "inputs").mkdir()
    (folder / "inputs" / "a.txt").write_text("plaintext")
    return folder


# --- job.json --------------------------------------------------------------------------------------------------


def test_job_round_trip(tmp_path: Path) -> None:
    job = _job(tmp_path, lr=0.5, names=["x"])
    again = JobSpec.from_json(job.to_json(), base=Path("/elsewhere"))
    assert again == job


def test_relative_paths_are_relative_to_the_job_file(tmp_path: Path) -> None:
    body = {
        "inputs": {"datasets": ["a.jsonl", "sub/b.jsonl"]},
        "params": {},
        "outputs_dir": "out",
        "checkpoint_dir": "/abs/ckpt",
        "progress_file": "progress.jsonl",
    }
    (tmp_path / "job.json").write_text(json.dumps(body))
    job = JobSpec.load(tmp_path / "job.json")
    assert job.inputs["datasets"] == (tmp_path / "a.jsonl", tmp_path / "sub" / "b.jsonl")
    assert job.outputs_dir == tmp_path / "out"
    assert job.checkpoint_dir == Path("/abs/ckpt")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"inputs": {}}', "missing checkpoint_dir"),
        (
            b'{"inputs": {}, "params": {}, "outputs_dir": "o", "checkpoint_dir": "c", "progress_file": "p", "x": 1}',
            "unknown key",
        ),
        (
            b'{"inputs": {"m": "file"}, "params": {}, "outputs_dir": "o", "checkpoint_dir": "c", "progress_file": "p"}',
            "list of file paths",
        ),
        (
            b'{"inputs": {"m": [""]}, "params": {}, "outputs_dir": "o", "checkpoint_dir": "c", "progress_file": "p"}',
            "list of file paths",
        ),
        (
            b'{"inputs": {}, "params": [], "outputs_dir": "o", "checkpoint_dir": "c", "progress_file": "p"}',
            "'params' must be an object",
        ),
        (
            b'{"inputs": {}, "params": {}, "outputs_dir": 3, "checkpoint_dir": "c", "progress_file": "p"}',
            "'outputs_dir' must be a path",
        ),
    ],
)
def test_malformed_job_files(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(JobInvalid, match=message):
        JobSpec.from_json(data, base=tmp_path)


def test_job_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(JOB_ENV, raising=False)
    with pytest.raises(JobInvalid, match=JOB_ENV):
        JobSpec.from_env()
    monkeypatch.setenv(JOB_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(JobInvalid, match="cannot read"):
        JobSpec.from_env()
    job = _job(tmp_path)
    (tmp_path / "job.json").write_bytes(job.to_json())
    monkeypatch.setenv(JOB_ENV, str(tmp_path / "job.json"))
    assert JobSpec.from_env() == job


def test_progress_lines(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    assert read_progress(path) == []
    append_progress(path, {"step": 1, "loss": 2.5})
    append_progress(path, {"step": 2, "loss": 2.0})
    with open(path, "a") as out:
        out.write('{"step": 3, "lo')  # killed mid-write
    assert read_progress(path) == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0}]
    with open(path, "a") as out:
        out.write("\n")
    with pytest.raises(MalformedInput, match="line 3"):
        read_progress(path)
    path.write_text("[1]\n")
    with pytest.raises(MalformedInput, match="not a JSON object"):
        read_progress(path)


# --- the engine process ----------------------------------------------------------------------------------------


def test_engine_sees_only_its_job_and_a_scrubbed_environment(
    probe_engine: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("CLOISTER_HOME", "/home/owner/.cloister")
    result = run_engine(probe_engine, _job(workspace), workspace=workspace, timeout=60, threads=3)
    seen = json.loads((workspace / "out" / "seen.json").read_text())
    env = seen["env"]
    # Python itself adds LC_CTYPE when it coerces a C locale to UTF-8 (PEP 538).
    assert set(env) <= {"PATH", "HOME", JOB_ENV, "PYTHONPATH", *THREAD_VARS, "LC_CTYPE"}
    assert env["HOME"] == str(workspace.resolve())
    assert env[JOB_ENV] == str(workspace.resolve() / JOB_FILE)
    assert env["PYTHONPATH"] == str(probe_engine.resolve())
    assert all(env[name] == "3" for name in THREAD_VARS)
    assert seen["cwd"] == str(workspace.resolve())
    assert seen["job"]["params"] == {"exit_code": 0, "sleep": 0.0}  # defaults filled in by the runner
    assert seen["job"]["inputs"] == {"data": [str(workspace / "inputs" / "a.txt")]}
    assert (workspace / JOB_FILE).stat().st_mode & 0o777 == 0o600
    assert result.progress == ({"step": 1, "loss": 0.5},)
    assert "probe ran" in result.log.read_text()
    assert result.seconds > 0
    assert not list(probe_engine.rglob("__pycache__")), "the engine must not write byte code into its bundle"


def test_script_entrypoint_runs_too(probe_engine: Path, workspace: Path) -> None:
    manifest = (probe_engine / "engine.toml").read_text()
    (probe_engine / "engine.toml").write_text(manifest.replace('"probe.main"', '"probe/main.py"'))
    run_engine(probe_engine, _job(workspace), workspace=workspace, timeout=60)
    assert (workspace / "out" / "seen.json").is_file()


def test_failing_engine_raises_with_its_last_words(probe_engine: Path, workspace: Path) -> None:
    with pytest.raises(EngineFailed, match="exited with code 3: probe failing on purpose") as caught:
        run_engine(probe_engine, _job(workspace, exit_code=3), workspace=workspace, timeout=60)
    assert caught.value.details["returncode"] == 3
    assert "probe ran" in caught.value.details["tail"]


def test_slow_engine_is_killed_at_the_timeout(probe_engine: Path, workspace: Path) -> None:
    with pytest.raises(EngineTimeout, match="longer than 1 s"):
        run_engine(probe_engine, _job(workspace, sleep=60.0), workspace=workspace, timeout=1)


def test_kill_stops_a_running_engine(probe_engine: Path, workspace: Path) -> None:
    with start_engine(probe_engine, _job(workspace, sleep=60.0), workspace=workspace) as process:
        deadline = time.monotonic() + 30
        while not (workspace / "out" / "seen.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.running()
        process.kill()
        assert not process.running()
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)


def test_job_is_checked_against_the_manifest_before_starting(probe_engine: Path, workspace: Path) -> None:
    with pytest.raises(JobInvalid, match="no parameter"):
        run_engine(probe_engine, _job(workspace, epochs=3), workspace=workspace, timeout=60)
    with pytest.raises(JobInvalid, match="must be of type int"):
        run_engine(probe_engine, _job(workspace, exit_code="1"), workspace=workspace, timeout=60)
    bad_inputs = JobSpec(
        inputs={"model": (workspace / "m",)},
        params={},
        outputs_dir=workspace / "out",
        checkpoint_dir=workspace / "c",
        progress_file=workspace / "p",
    )
    with pytest.raises(JobInvalid, match="no input role"):
        run_engine(probe_engine, bad_inputs, workspace=workspace, timeout=60)
    assert not (workspace / JOB_FILE).exists()
    shutil.rmtree(workspace)
    with pytest.raises(JobInvalid, match="workspace"):
        run_engine(probe_engine, _job(workspace), workspace=workspace, timeout=60)

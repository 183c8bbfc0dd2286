"""Start an unpacked engine as a separate process, in a private workspace, with a scrubbed environment.

The engine sees only its ``job.json`` (``CLOISTER_JOB``), ``HOME`` = the workspace, ``PATH``, the thread-count
variables and ``PYTHONPATH`` = its own bundle, so nothing of the loader's environment (keys, tokens, endpoints)
leaks into code that reads plaintext. The loader meters time and progress from the outside.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from cloister.engines.job import JOB_ENV, JobSpec, read_progress
from cloister.engines.manifest import EngineManifest, load_manifest
from cloister.errors import EngineFailed, EngineTimeout, JobInvalid

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
JOB_FILE = "job.json"
LOG_FILE = "engine.log"
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_LOG_TAIL = 2000


@dataclass(frozen=True)
class EngineResult:
    """A finished run: wall time measured by the runner, the combined stdout/stderr log, and the progress lines."""

    seconds: float
    log: Path
    progress: tuple[Mapping[str, Any], ...]


def engine_env(bundle_dir: Path, job_file: Path, workspace: Path, threads: int) -> dict[str, str]:
    """The whole environment an engine gets; nothing is inherited except ``PATH``."""
    env = {
        "PATH": os.environ.get("PATH", _DEFAULT_PATH),
        "HOME": str(workspace),
        JOB_ENV: str(job_file),
        "PYTHONPATH": str(bundle_dir),
    }
    env.update({name: str(threads) for name in THREAD_VARS})
    return env


def _command(manifest: EngineManifest, bundle_dir: Path, python: str) -> list[str]:
    # -B: never write byte code into the bundle; -s: no user site-packages; -u: the log keeps stdout and stderr
    # in the order they were written.
    flags = [python, "-B", "-s", "-u"]
    if manifest.entry_is_file:
        return [*flags, str(bundle_dir / manifest.entrypoint)]
    return [*flags, "-m", manifest.entrypoint]


class EngineProcess:
    """A running engine; use it in a ``with`` block so it is killed if the caller stops waiting."""

    def __init__(self, manifest: EngineManifest, popen: subprocess.Popen[bytes], job: JobSpec, log: Path) -> None:
        self.manifest = manifest
        self.job = job
        self.log = log
        self._popen = popen
        self._started = time.monotonic()

    @property
    def pid(self) -> int:
        return self._popen.pid

    def running(self) -> bool:
        return self._popen.poll() is None

    def kill(self) -> None:
        """Kill the engine and everything it started (it runs in its own process group)."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGKILL)
        self._popen.wait()

    def wait(self, timeout: float) -> EngineResult:
        """Wait for exit 0; after ``timeout`` s since the start kill it and raise :class:`EngineTimeout`."""
        try:
            code = self._popen.wait(timeout=max(0.0, timeout - (time.monotonic() - self._started)))
        except subprocess.TimeoutExpired:
            self.kill()
            raise EngineTimeout(
                f"the {self.manifest.name} engine ran longer than {timeout:.0f} s and was killed; "
                "give the job more time or fewer steps",
                log=str(self.log),
            ) from None
        seconds = time.monotonic() - self._started
        if code != 0:
            tail = self._log_tail()
            last = tail.strip().splitlines()[-1] if tail.strip() else "(no output)"
            raise EngineFailed(
                f"the {self.manifest.name} engine exited with code {code}: {last}",
                returncode=code,
                log=str(self.log),
                tail=tail,
            )
        return EngineResult(seconds=seconds, log=self.log, progress=tuple(read_progress(self.job.progress_file)))

    def _log_tail(self) -> str:
        try:
            with open(self.log, "rb") as stream:
                stream.seek(max(0, stream.seek(0, os.SEEK_END) - _LOG_TAIL))
                return stream.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.kill()


def start_engine(
    bundle_dir: Path,
    job: JobSpec,
    *,
    workspace: Path,
    threads: int | None = None,
    python: str = sys.executable,
) -> EngineProcess:
    """Check the job against the engine's manifest, write ``job.json`` into ``workspace`` and start the engine.

    The job's parameters are written with the manifest's defaults filled in, so the engine and the order report
    name the same values.
    """
    bundle_dir, workspace = Path(bundle_dir).resolve(), Path(workspace).resolve()
    manifest = load_manifest(bundle_dir)
    manifest.check_inputs(job.inputs)
    job = replace(job, params=manifest.resolve_params(job.params))
    if not workspace.is_dir():
        raise JobInvalid(f"the workspace {workspace} does not exist; the loader creates it before starting an engine")
    for folder in (job.outputs_dir, job.checkpoint_dir, job.progress_file.parent):
        Path(folder).mkdir(mode=0o700, parents=True, exist_ok=True)
    job_file = workspace / JOB_FILE
    fd = os.open(job_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(job.to_json())
    log = workspace / LOG_FILE
    count = threads if threads is not None else len(os.sched_getaffinity(0))
    with open(log, "ab") as log_stream:
        popen = subprocess.Popen(
            _command(manifest, bundle_dir, python),
            cwd=workspace,
            env=engine_env(bundle_dir, job_file, workspace, count),
            stdin=subprocess.DEVNULL,
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return EngineProcess(manifest, popen, job, log)


def run_engine(
    bundle_dir: Path,
    job: JobSpec,
    *,
    workspace: Path,
    timeout: float,
    threads: int | None = None,
) -> EngineResult:
    """Run the engine to completion (see :func:`start_engine` and :meth:`EngineProcess.wait`)."""
    with start_engine(bundle_dir, job, workspace=workspace, threads=threads) as process:
        return process.wait(timeout)

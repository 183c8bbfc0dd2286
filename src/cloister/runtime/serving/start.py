"""Start a whole replica for a prepared inference job: engine process, vault, replica server.

The loader's :meth:`~cloister.runtime.loader.TrustedLoader.prepare` has opened the grants and decrypted model and
adapters into the workspace. This starts the ``chat_inference`` engine there (it announces its port in the
progress file once loaded), creates the deployment's vault or joins it through a live replica, and serves the
replica protocol on ``host:port``. The handle carries what the provider publishes with ``deployment.endpoint``:
the URL, the deployment key and the loader's signature over both.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette

from cloister.consensus.endpoint import sign_endpoint
from cloister.engines.job import JobSpec, read_progress
from cloister.engines.runner import EngineProcess, start_engine
from cloister.errors import CloisterError, LoaderError, VaultError
from cloister.ledger.protocol import LedgerReader
from cloister.provenance.report import Wipe
from cloister.runtime.loader import PreparedJob, TrustedLoader
from cloister.runtime.serving.replica import Deployment, Fault, ReplicaServer
from cloister.runtime.serving.vault_share import join_vault
from cloister.runtime.vault import Vault

VAULT_FILE = "vault.bin"
LOCALHOST = "127.0.0.1"
_POLL = 0.1


class BackgroundServer:
    """An ASGI app served by uvicorn on a thread, on a socket bound before it starts (so port 0 works)."""

    def __init__(self, app: Starlette, host: str, port: int, *, start_timeout: float = 30) -> None:
        self._socket = socket.create_server((host, port), reuse_port=False)
        self.host, self.port = host, int(self._socket.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="cloister-replica", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise LoaderError(f"the replica server on {host}:{self.port} did not start; see the node's log")
            time.sleep(_POLL / 10)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@dataclass
class ReplicaHandle:
    """A running replica: ``url``, the deployment key and ``key_signature`` go into ``deployment.endpoint``."""

    url: str
    deployment_key: bytes
    key_signature: bytes
    server: ReplicaServer
    prepared: PreparedJob
    _http: BackgroundServer = field(repr=False)
    _engine: EngineProcess = field(repr=False)

    def running(self) -> bool:
        return self._engine.running() and self._http.alive()

    def stop(self) -> Wipe:
        """Stop serving, kill the engine and wipe the workspace (plaintext model, vault file, log)."""
        try:
            self._http.stop()
        finally:
            self._engine.kill()
        return self.prepared.workspace.wipe(now=int(time.time()))


def _wait_ready(engine: EngineProcess, job: JobSpec, timeout: float) -> str:
    """The engine's URL once it announces it is ready; its log tail if it dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [entry for entry in read_progress(job.progress_file) if entry.get("ready") is True]
        if ready and isinstance(ready[-1].get("port"), int):
            return f"http://{LOCALHOST}:{ready[-1]['port']}"
        if not engine.running():
            engine.wait(0)  # raises EngineFailed with the log's last line
            raise LoaderError("the chat engine exited without serving; see its log")
        time.sleep(_POLL)
    engine.kill()
    raise LoaderError(f"the chat engine did not get ready within {timeout:.0f} s; give it more time or a smaller model")


def _live_peers(ledger: LedgerReader | None, order_id: str, machine_id: str) -> list[str]:
    if ledger is None:
        return []
    return [e.url for e in ledger.endpoints(order_id) if e.removed_at is None and e.machine_id != machine_id]


def _vault(loader: TrustedLoader, prepared: PreparedJob, peers: Sequence[str]) -> Vault:
    """A new vault when this is the deployment's first replica, else the one a live replica shares."""
    path = prepared.workspace.path / VAULT_FILE
    if not peers:
        return Vault.create(prepared.engine.digest, path)
    problems = []
    for url in peers:
        try:
            return join_vault(
                url, loader.identity, machine_id=loader.machine_id, engine_digest=prepared.engine.digest, path=path
            )
        except CloisterError as exc:
            problems.append(f"{url}: {exc.message}")
    raise VaultError(
        f"no live replica of deployment {prepared.order.order_id} shared its vault ({'; '.join(problems)}); "
        "the deployment key cannot be recovered without one, so check those replicas or redeploy"
    )


def start_replica(
    loader: TrustedLoader,
    prepared: PreparedJob,
    *,
    port: int = 0,
    host: str = LOCALHOST,
    ledger: LedgerReader | None = None,
    peers: Sequence[str] | None = None,
    fault: Fault = "none",
    ready_timeout: float = 600,
) -> ReplicaHandle:
    """Run the prepared deployment's engine and serve it; ``peers`` (replica URLs to join the vault through)
    defaults to the deployment's live endpoints on ``ledger``. On failure nothing keeps running."""
    ws = prepared.workspace
    job = JobSpec(
        inputs=prepared.inputs,
        params={**prepared.params, "port": 0},
        outputs_dir=ws.outputs,
        checkpoint_dir=ws.checkpoints,
        progress_file=ws.progress_file,
    )
    order_id = prepared.order.order_id
    engine = start_engine(ws.engine, job, workspace=ws.path, threads=loader.threads)
    try:
        engine_url = _wait_ready(engine, job, ready_timeout)
        vault = _vault(loader, prepared, _live_peers(ledger, order_id, loader.machine_id) if peers is None else peers)
        deployment = Deployment(
            order_id, prepared.model.digest, tuple(ref.digest for ref in prepared.adapters), prepared.engine.digest
        )
        server = ReplicaServer(
            loader.identity, loader.machine_id, deployment, engine_url, vault, ledger=ledger, fault=fault
        )
        http = BackgroundServer(server.app(), host, port)
    except BaseException:
        engine.kill()
        raise
    signature = sign_endpoint(loader.identity, order_id, loader.machine_id, http.url, server.deployment_key)
    return ReplicaHandle(http.url, server.deployment_key, signature, server, prepared, http, engine)

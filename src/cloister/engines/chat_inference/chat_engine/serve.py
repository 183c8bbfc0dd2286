"""Load, bind 127.0.0.1, announce readiness, serve: the engine's life after its job is checked."""

from __future__ import annotations

import os
import socket

import torch
import uvicorn

from cloister.engines.job import JobSpec, append_progress

from .api import create_app
from .config import ServeConfig
from .model import load
from .worker import Worker

HOST = "127.0.0.1"


def _threads(config: ServeConfig) -> int:
    value = os.environ.get("OMP_NUM_THREADS", "")
    from_env = int(value) if value.isdigit() and int(value) > 0 else len(os.sched_getaffinity(0))
    return config.threads or from_env


def serve(job: JobSpec, config: ServeConfig) -> None:
    """Serve until the process is stopped; the socket is bound before readiness is announced."""
    torch.set_num_threads(_threads(config))
    torch.use_deterministic_algorithms(True)
    worker = Worker(load(config))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, config.port))
    listener.listen(128)
    port = listener.getsockname()[1]
    append_progress(job.progress_file, {"ready": True, "port": port, "model": worker.loaded.model_id})
    server = uvicorn.Server(uvicorn.Config(create_app(worker), log_level="warning", access_log=False))
    try:
        server.run(sockets=[listener])
    finally:
        worker.close()
        listener.close()

"""Serving inference inside the TEE: the replica server in front of the sandboxed ``chat_inference`` engine.

:class:`ReplicaServer` speaks the replica protocol (``/health``, ``/v1/models``, ``/cloister/v1/execute``,
``/cloister/v1/vault/join``); :func:`start_replica` starts engine, vault and server for a prepared deployment.
"""

from cloister.runtime.serving.replica import FAULTS, Deployment, Fault, ReplicaServer
from cloister.runtime.serving.start import BackgroundServer, ReplicaHandle, start_replica
from cloister.runtime.serving.vault_share import deployment_key, join_vault

__all__ = [
    "FAULTS",
    "BackgroundServer",
    "Deployment",
    "Fault",
    "ReplicaHandle",
    "ReplicaServer",
    "deployment_key",
    "join_vault",
    "start_replica",
]

"""Replicas of a test deployment, each in its own process (engine included), registered on the ledger.

A replica process can be stopped cleanly (stdin closed) or killed with SIGKILL like a crashed node; its engine
runs in its own process group, so a kill also takes the engine down, as a machine's crash would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from tests.gateway.network import Network

from cloister.ledger.transactions import RegisterEndpoint
from cloister.runtime.serving import Fault

SCRIPT = Path(__file__).with_name("replica_process.py")


@dataclass
class ReplicaProcess:
    machine_id: str
    process: subprocess.Popen[str]
    url: str

    def children(self) -> list[int]:
        """Processes the replica started (its engine), found through /proc."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid:
                    found.append(int(entry.name))
        return found

    def kill(self) -> None:
        """SIGKILL the replica and its engine's process group, like a machine that crashed."""
        engines = self.children()
        self.process.kill()
        self.process.wait(timeout=30)
        for pid in engines:
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def start_replica(network: Network, order_id: str, machine_id: str, fault: Fault = "none") -> ReplicaProcess:
    """Start the replica of ``machine_id`` and publish its endpoint (its provider signs the transaction)."""
    node = network.nodes[machine_id]
    assert node.registration is not None
    settings = {
        "ledger": str(network.ledger.path),
        "blobs": str(network.root / "blobs"),
        "node_folder": str(node.folder),
        "machine_id": machine_id,
        "tcb_id": node.registration.tcb_id,
        "workspaces": str(network.root / "workspaces" / machine_id),
        "order_id": order_id,
        "fault": fault,
    }
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), json.dumps(settings)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=30)
        raise RuntimeError(f"replica of {machine_id} exited with {process.returncode} before serving")
    endpoint = json.loads(line)
    node.wallet.send(
        RegisterEndpoint(
            order_id,
            machine_id,
            endpoint["url"],
            bytes.fromhex(endpoint["deployment_key"]),
            bytes.fromhex(endpoint["key_signature"]),
        )
    )
    return ReplicaProcess(machine_id, process, endpoint["url"])


def start_replicas(
    network: Network, order_id: str, faults: dict[str, Fault] | None = None
) -> dict[str, ReplicaProcess]:
    """One replica per assigned machine: the first creates the deployment's vault, the others (started together)
    join it through the first."""
    machines = network.ledger.order(order_id).machines
    faults = faults or {}
    started = {machines[0]: start_replica(network, order_id, machines[0], faults.get(machines[0], "none"))}
    failures = []
    with ThreadPoolExecutor(len(machines)) as pool:
        futures = {m: pool.submit(start_replica, network, order_id, m, faults.get(m, "none")) for m in machines[1:]}
        for machine_id, future in futures.items():
            try:
                started[machine_id] = future.result()
            except Exception as exc:  # stop the others before reporting it
                failures.append(exc)
    if failures:
        for replica in started.values():
            replica.stop()
        raise failures[0]
    return started

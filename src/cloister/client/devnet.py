"""A one-machine network under ``<home>/devnet``: the embedded ledger served over HTTP and a local blob store.

The ledger server runs detached (its own session), logs to ``ledger.log`` and records its pid in ``ledger.pid``,
so the devnet outlives the command that started it and ``cloister devnet down`` can stop it from anywhere.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloister.attest.der import Certificate, parse_pem_certificates
from cloister.attest.policy import AppraisalPolicy
from cloister.attest.sim import SimVendor
from cloister.client.config import devnet_file, read_devnet_file
from cloister.crypto.identity import Identity
from cloister.errors import ConfigError, ServiceUnavailable
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import UNITS_PER_TOKEN, Genesis
from cloister.ledger.http import HttpLedger
from cloister.ledger.protocol import Head
from cloister.ledger.transactions import DepositStake
from cloister.storage.local import LocalBlobStore

NODE_STAKE = 100 * UNITS_PER_TOKEN
"""What each devnet node stakes: twice the devnet's minimum for serving deployments."""
GATEWAY_ACCOUNT = "gateway"

if TYPE_CHECKING:
    from cloister.ledger.evm.devnet import DevnetChain
    from cloister.ledger.evm.ledger import EvmLedger


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (started by this very process) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


EMBEDDED = "embedded"
EVM = "evm"


def _alive_pid(pid_file: Path) -> bool:
    try:
        return _alive(int(pid_file.read_text().strip()))
    except (OSError, ValueError):
        return False


def _stop(pid_file: Path, timeout: float) -> bool:
    """SIGTERM the process a pid file names, SIGKILL it if it lingers; remove the file. True if it was running."""
    running = _alive_pid(pid_file)
    if running:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return running


@dataclass(frozen=True)
class DevnetStatus:
    running: bool
    info: dict[str, Any]
    head: Head | None


class Devnet:
    """Start, stop and inspect the devnet of one Cloister home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.dir = home / "devnet"

    @property
    def db_path(self) -> Path:
        return self.dir / "ledger.db"

    @property
    def log_path(self) -> Path:
        return self.dir / "ledger.log"

    @property
    def pid_path(self) -> Path:
        return self.dir / "ledger.pid"

    @property
    def blobs_path(self) -> Path:
        return self.dir / "blobs"

    @property
    def sim_vendor_path(self) -> Path:
        return self.dir / "sim-vendor"

    def sim_vendor(self) -> SimVendor:
        """The devnet's simulated TEE vendor (root CA), created on first use; its root is trusted by genesis."""
        if (self.sim_vendor_path / "root.key").exists():
            return SimVendor.load(self.sim_vendor_path)
        return SimVendor.create(self.sim_vendor_path)

    def trust(self) -> tuple[AppraisalPolicy, dict[str, tuple[Certificate, ...]]]:
        """The policy and roots a keeper or verifier uses on this devnet: the devnet policy, the devnet's vendor.

        Without a devnet there is no simulated vendor to trust: the production policy, and no sim roots.
        """
        if not (self.sim_vendor_path / "root.pem").exists():
            return AppraisalPolicy.packaged("production"), {}
        roots = tuple(parse_pem_certificates(SimVendor.load(self.sim_vendor_path).root_pem.encode()))
        return AppraisalPolicy.packaged("devnet"), {"sim": roots}

    def is_running(self) -> bool:
        return _alive_pid(self.pid_path)

    @property
    def chain(self) -> DevnetChain:
        """The EVM devnet's folder (anvil state, deployment, registrar key); web3 is imported only when needed."""
        from cloister.ledger.evm.devnet import DevnetChain

        return DevnetChain(self.dir / "chain")

    def kind(self) -> str | None:
        """Which ledger this devnet was created with: ``embedded``, ``evm``, or None if it was never started."""
        if self.db_path.exists():
            return EMBEDDED
        if (self.dir / "chain" / "deployment.json").exists():
            return EVM
        return None

    def up(self, *, port: int | None = None, ledger: str = EMBEDDED, timeout: float = 30.0) -> dict[str, Any]:
        """Create the devnet on first use, start its ledger (server or anvil), and wait until it answers."""
        if ledger not in (EMBEDDED, EVM):
            raise ConfigError(f"unknown ledger {ledger!r}; choose {EMBEDDED} or {EVM}")
        existing = self.kind()
        if existing is not None and existing != ledger:
            raise ConfigError(
                f"the devnet in {self.dir} was created with the {existing} ledger; start it with --ledger {existing} "
                "or remove the folder for a new one"
            )
        if self.is_running():
            info = read_devnet_file(self.home)
            if info:
                return info
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        LocalBlobStore(self.blobs_path)
        if ledger == EVM:
            return self._up_evm(port)
        if not self.db_path.exists():
            EmbeddedLedger.create(self.db_path, self._genesis()).close()
        port = port or _free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "cloister",
            "ledger",
            "serve",
            "--db",
            str(self.db_path),
            "--port",
            str(port),
        ]
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_path.write_text(str(process.pid))
        chain_id, _ = self._wait_ready(url, process, timeout)
        info = {
            "ledger": EMBEDDED,
            "ledger_url": url,
            "blob_store": self.blobs_path.resolve().as_uri(),
            "chain_id": chain_id,
            "pid": process.pid,
            "log": str(self.log_path),
        }
        devnet_file(self.home).write_text(json.dumps(info, indent=2))
        return info

    def _up_evm(self, port: int | None) -> dict[str, Any]:
        anvil, deployment = self.chain.up(self._genesis, port=port)
        self.pid_path.write_text(str(anvil.process.pid))
        info = {
            "ledger": EVM,
            "ledger_url": anvil.url,
            "blob_store": self.blobs_path.resolve().as_uri(),
            "chain_id": deployment.genesis.chain_id,
            "contract": deployment.address,
            "pid": anvil.process.pid,
            "log": str(self.chain.log),
        }
        devnet_file(self.home).write_text(json.dumps(info, indent=2))
        return info

    def _genesis(self) -> Genesis:
        return Genesis.devnet(int(time.time()), sim_roots=(self.sim_vendor().root_pem,))

    def _wait_ready(self, url: str, process: subprocess.Popen[bytes], timeout: float) -> tuple[str, Head]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceUnavailable(f"the ledger server exited at start-up:\n{self.log_tail()}")
            try:
                with HttpLedger(url, timeout=2.0) as ledger:
                    return ledger.chain_id, ledger.head()
            except ServiceUnavailable:
                time.sleep(0.1)
        process.kill()
        raise ServiceUnavailable(f"the ledger server did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start_nodes(self, count: int) -> list[int]:
        """Start ``count`` provider nodes (``node-1`` …) as detached `cloister node run` processes on this devnet.

        Each gets a funded account in the devnet's keystore on first start, its own log and pid file under
        ``devnet/nodes/``; `down` stops them.
        """
        from cloister.client.sdk import Client  # the SDK imports this module

        folder = self.dir / "nodes"
        folder.mkdir(mode=0o700, exist_ok=True)
        pids = []
        for index in range(1, count + 1):
            name = f"node-{index}"
            if _alive_pid(folder / f"{name}.pid"):
                continue
            if name not in {entry.name for entry in Client(home=self.home).keystore.list_accounts()}:
                with Client(home=self.home, account=name) as operator:
                    operator.create_account(name, service=True)
                    operator.fund(200 * UNITS_PER_TOKEN)
                    operator.wallet.send(DepositStake(NODE_STAKE))  # deployments need staked providers
            command = [sys.executable, "-m", "cloister", "--home", str(self.home), "-a", name, "node", "run"]
            command += ["--platform", "sim"]  # devnet machines are simulated TEEs, chosen by name
            with (folder / f"{name}.log").open("ab") as log:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            (folder / f"{name}.pid").write_text(str(process.pid))
            pids.append(process.pid)
        return pids

    @property
    def gateway_pid_path(self) -> Path:
        return self.dir / "gateway.pid"

    def start_gateway(self, *, port: int | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Start the devnet's gateway (account ``gateway``) as a detached `cloister gateway run`; deployments that
        name its address are served at its URL, which the devnet file records for the CLI and SDK."""
        from cloister.client.sdk import Client  # the SDK imports this module

        info = read_devnet_file(self.home) or {}
        if _alive_pid(self.gateway_pid_path) and "gateway_url" in info:
            return info
        with Client(home=self.home, account=GATEWAY_ACCOUNT) as gateway:
            if GATEWAY_ACCOUNT not in {entry.name for entry in gateway.keystore.list_accounts()}:
                gateway.create_account(GATEWAY_ACCOUNT, service=True)
            address = gateway.address
        port = port or _free_port()
        command = [sys.executable, "-m", "cloister", "--home", str(self.home), "gateway", "run"]
        command += ["--identity", GATEWAY_ACCOUNT, "--port", str(port), "--settle-every", "10"]
        with (self.dir / "gateway.log").open("ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.gateway_pid_path.write_text(str(process.pid))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    tail = (self.dir / "gateway.log").read_text(errors="replace").splitlines()[-20:]
                    raise ServiceUnavailable("the gateway did not start:\n" + "\n".join(tail)) from None
                time.sleep(0.1)
        info = {**info, "gateway_address": address, "gateway_url": url, "gateway_pid": process.pid}
        devnet_file(self.home).write_text(json.dumps(info, indent=2))
        return info

    def down(self, timeout: float = 10.0) -> bool:
        """Stop the nodes, the gateway and the ledger; True if the ledger was running. The data stays."""
        for pid_file in sorted((self.dir / "nodes").glob("*.pid")):
            _stop(pid_file, timeout)
        _stop(self.gateway_pid_path, timeout)
        running = _stop(self.pid_path, timeout)
        devnet_file(self.home).unlink(missing_ok=True)
        return running

    def status(self) -> DevnetStatus:
        info = read_devnet_file(self.home) or {}
        if not self.is_running() or not info:
            return DevnetStatus(False, info, None)
        try:
            ledger = self.connect(info)
        except (ServiceUnavailable, ConfigError, KeyError):
            return DevnetStatus(True, info, None)
        try:
            return DevnetStatus(True, info, ledger.head())
        except ServiceUnavailable:
            return DevnetStatus(True, info, None)
        finally:
            ledger.close()

    def connect(self, info: dict[str, Any], identities: Iterable[Identity] = ()) -> HttpLedger | EvmLedger:
        """A client of the running devnet's ledger, acting for ``identities`` (EVM transactions need their keys)."""
        if info.get("ledger") == EVM:
            return self.chain.ledger(str(info["ledger_url"]), identities)
        return HttpLedger(str(info["ledger_url"]), timeout=2.0)

"""anvil on 127.0.0.1 for the devnet and the tests, and deploying the contracts to it.

anvil keeps the chain in memory; with ``state`` it loads that file at start and writes it back when stopped
(and every ``state_interval`` seconds), so a devnet survives a restart. Gas on a devnet comes from
``anvil_setBalance``: accounts never need to be funded with ether by hand.
"""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from eth_account import Account as EthAccount
from eth_account.signers.local import LocalAccount

from cloister.crypto.identity import Identity
from cloister.errors import ConfigError, ServiceUnavailable
from cloister.keystore import write_private_file
from cloister.ledger.evm.deploy import Deployment, deploy_to
from cloister.ledger.evm.keys import Keyring
from cloister.ledger.evm.ledger import EvmLedger
from cloister.ledger.evm.rpc import Rpc
from cloister.ledger.evm.toolchain import anvil_binary
from cloister.ledger.evm.transact import AnvilGas
from cloister.ledger.genesis import Genesis

DEVNET_CHAIN_ID = 31337
"""anvil's usual chain id: wallets and tools recognise it as a local development chain."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Anvil:
    """A running anvil process; stop it with :meth:`stop` (or use it as a context manager)."""

    process: subprocess.Popen[bytes]
    port: int
    state: Path | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop gracefully (anvil writes its state file on the way out); kill it if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def __enter__(self) -> Anvil:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_anvil(
    *,
    port: int | None = None,
    state: Path | None = None,
    state_interval: int | None = None,
    timestamp: int | None = None,
    chain_id: int = DEVNET_CHAIN_ID,
    log: Path | None = None,
    timeout: float = 30.0,
    detach: bool = False,
) -> Anvil:
    """Start anvil on 127.0.0.1 and wait until it answers; ``detach`` starts it in its own session."""
    port = port or free_port()
    command = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id)]
    command += ["--accounts", "1"]
    if state is not None:
        command += ["--state", str(state)]
        if state_interval:
            command += ["--state-interval", str(state_interval)]
    if timestamp is not None:
        command += ["--timestamp", str(timestamp)]
    output = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detach
        )
    except OSError as exc:
        raise ConfigError(f"cannot start anvil ({exc}); run `npm ci` in the Cloister checkout") from None
    finally:
        if log is not None and not isinstance(output, int):
            output.close()
    anvil = Anvil(process, port, state, log)
    rpc = Rpc(anvil.url, retry_for=0)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ConfigError(f"anvil exited with status {process.returncode}; see {log or 'its output'}")
        try:
            rpc.request("eth_chainId", [])
            return anvil
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                anvil.stop()
                raise ServiceUnavailable(f"anvil did not answer on {anvil.url} within {timeout:.0f}s") from None
            time.sleep(0.05)


def new_key() -> LocalAccount:
    """A fresh random Ethereum key (a devnet's deployer or attestation registrar)."""
    account: LocalAccount = EthAccount.from_key(secrets.token_bytes(32))
    return account


def deploy_to_anvil(url: str, genesis: Genesis, registrar: str) -> Deployment:
    """Deploy the contracts for ``genesis`` from a fresh key that anvil funds, trusting ``registrar``."""
    return deploy_to(url, new_key(), genesis, registrar, gas=AnvilGas())


def save_key(path: Path, account: LocalAccount) -> None:
    """Keep an Ethereum key (the devnet's registrar) in a 0600 file."""
    write_private_file(path, bytes(account.key).hex().encode())


def load_key(path: Path) -> LocalAccount:
    try:
        account: LocalAccount = EthAccount.from_key(bytes.fromhex(path.read_text().strip()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the key in {path} ({exc}); restore it or start a new devnet") from None
    return account


@dataclass(frozen=True)
class DevnetChain:
    """A devnet's chain folder: anvil's state, the deployment record, the registrar key, anvil's log."""

    folder: Path

    @property
    def state(self) -> Path:
        return self.folder / "anvil-state.json"

    @property
    def deployment(self) -> Path:
        return self.folder / "deployment.json"

    @property
    def registrar(self) -> Path:
        return self.folder / "registrar.key"

    @property
    def log(self) -> Path:
        return self.folder / "anvil.log"

    def up(self, genesis: Callable[[], Genesis], *, port: int | None = None) -> tuple[Anvil, Deployment]:
        """Start anvil detached on the folder's state; on first start deploy ``genesis()`` and save the record.

        The caller records ``anvil.process.pid``; stopping it with SIGTERM makes anvil write its state.
        """
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        anvil = start_anvil(port=port, state=self.state, state_interval=5, log=self.log, detach=True)
        try:
            if self.deployment.exists():
                return anvil, Deployment.load(self.deployment)
            registrar = new_key()
            deployment = deploy_to_anvil(anvil.url, genesis(), registrar.address)
            save_key(self.registrar, registrar)
            deployment.save(self.deployment)
            return anvil, deployment
        except BaseException:
            anvil.stop()
            raise

    def ledger(self, url: str, identities: Iterable[Identity]) -> EvmLedger:
        """A client of this devnet acting for ``identities``, with gas from anvil and the devnet's registrar."""
        registrar = load_key(self.registrar) if self.registrar.exists() else None
        deployment = Deployment.load(self.deployment)
        return EvmLedger(Rpc(url), deployment, Keyring(identities), gas=AnvilGas(), registrar=registrar)

"""Fixtures for the ledger conformance suite: every test taking ``ledger`` runs against each backend."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from tests.ledger import attested
from tests.ledger.evm_chain import EvmChain, evm_chain

from cloister.crypto.identity import Identity
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import Genesis
from cloister.ledger.http import HttpLedger
from cloister.ledger.protocol import Ledger
from cloister.ledger.server import create_app
from cloister.ledger.wallet import Wallet

GENESIS_TIME = 1_800_000_000


class FakeClock:
    """Ledger time the test controls; both backends share it because the HTTP one wraps the same ledger."""

    def __init__(self, now: int = GENESIS_TIME) -> None:
        self.now = now

    def __call__(self) -> float:
        return float(self.now)

    def advance(self, seconds: int) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_genesis() -> Genesis:
    return Genesis(
        chain_id="cloister-test",
        time=GENESIS_TIME,
        params=attested.params(faucet_limit=1_000_000_000_000, heartbeat_timeout=120, min_provider_stake=0),
    )


@pytest.fixture
def genesis() -> Genesis:
    return make_genesis()


@pytest.fixture(scope="session")
def evm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvmChain]:
    """One anvil for the session, with the contracts deployed; stopped at the end."""
    with evm_chain(tmp_path_factory.mktemp("anvil"), make_genesis()) as chain:
        yield chain


@pytest.fixture
def embedded(tmp_path: Path, genesis: Genesis, clock: FakeClock) -> Iterator[EmbeddedLedger]:
    ledger = EmbeddedLedger.create(tmp_path / "ledger.db", genesis, clock=clock)
    try:
        yield ledger
    finally:
        ledger.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread, for in-process HTTP tests."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def served(embedded: EmbeddedLedger) -> Iterator[ThreadedServer]:
    with ThreadedServer(create_app(embedded)) as server:
        yield server


@pytest.fixture(params=["embedded", "http", "evm"])
def ledger(
    request: pytest.FixtureRequest,
    embedded: EmbeddedLedger,
    genesis: Genesis,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Ledger]:
    if request.param == "embedded":
        yield embedded
        return
    if request.param == "evm":
        chain: EvmChain = request.getfixturevalue("evm")
        with chain.ledger(genesis, clock, monkeypatch) as evm_ledger:
            yield evm_ledger
        return
    with ThreadedServer(create_app(embedded)) as server, HttpLedger(server.url) as client:
        yield client


@pytest.fixture
def make_wallet(ledger: Ledger) -> Callable[..., Wallet]:
    """A registered (and by default funded) account on the ledger under test."""

    def make(name: str = "user", funds: int = 1_000_000_000) -> Wallet:
        wallet = Wallet(Identity.generate(), ledger)
        wallet.register(name)
        if funds:
            wallet.faucet(funds)
        return wallet

    return make

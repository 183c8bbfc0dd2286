"""Fixtures for gateway tests: a real network (ledger, staked machines, a deployment) and a served gateway."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from tests.gateway.network import Heartbeats, Network, make_network
from tests.gateway.replicas import ReplicaProcess, start_replicas
from tests.ledger.conftest import free_port

from cloister.client.sdk import Client
from cloister.consensus.apikeys import make_api_key
from cloister.crypto.identity import Identity
from cloister.gateway.app import create_app
from cloister.gateway.service import Gateway, GatewayConfig
from cloister.ledger.genesis import UNITS_PER_TOKEN
from cloister.ledger.records import Order, Pricing
from cloister.runtime.serving import Fault

PRICE = 2 * UNITS_PER_TOKEN
"""Units per 1000 tokens the test deployment charges."""


class GatewayServer:
    """A gateway app on 127.0.0.1 in a thread, with its lifespan (refresh, health, settlement loops)."""

    def __init__(self, gateway: Gateway, *, wrap: Callable[[Any], Any] = lambda app: app) -> None:
        self.gateway = gateway
        self.port = free_port()
        app = wrap(create_app(gateway))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GatewayServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@dataclass
class Deployment:
    """A deployment on the test network, and the people around it."""

    network: Network
    order: Order
    gateway_identity: Identity
    developer: Client
    model_owner: Client
    user: Client

    @property
    def order_id(self) -> str:
        return self.order.order_id

    def api_key(self, consensus: str | None = None, user: Client | None = None) -> str:
        return make_api_key((user or self.user).identity, self.gateway_identity.address, consensus)

    def gateway(self, folder: Path, **config: Any) -> Gateway:
        # Nodes heart-beat only when a test says so: no machine counts as stale unless the test asks for it.
        settings = {"health_interval": 0.5, "settle_every": 3600.0, "commit_timeout": 30.0, "stale_after": 10**9}
        settings.update(config)
        return Gateway(self.gateway_identity, self.network.ledger, GatewayConfig(folder=folder, **settings))


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    net = make_network(tmp_path / "net")
    try:
        yield net
    finally:
        net.close()


def make_deployment(network: Network, replicas: int, *, spares: int = 1, consensus: str | None = None) -> Deployment:
    """``replicas + spares`` staked machines, a deployment on ``replicas`` of them, keys granted."""
    for index in range(replicas + spares):
        network.provider(f"provider{index}")
    model_owner = network.party("modelowner")
    engine_owner = network.party("engineowner")
    developer = network.party("developer")
    user = network.party("user")
    gateway_identity = network.party("gateway").identity
    model = network.publish_model(model_owner, Pricing("revenue_share", 0, 1000))
    engine = network.publish_engine(engine_owner)
    params: dict[str, Any] = {"price_per_1k_tokens": PRICE, "gateway": gateway_identity.address}
    if consensus is not None:
        params["consensus"] = consensus
    order = network.deploy(developer, model, engine, replicas=replicas, params=params)
    network.grant("modelowner", "engineowner")
    return Deployment(network, network.ledger.order(order.order_id), gateway_identity, developer, model_owner, user)


@pytest.fixture
def deployment(network: Network) -> Deployment:
    return make_deployment(network, 3)


@dataclass
class Live:
    """A deployment with its replicas running (each in its own process) and a gateway serving it."""

    deployment: Deployment
    replicas: dict[str, ReplicaProcess]
    server: GatewayServer
    heartbeats: Heartbeats

    @property
    def network(self) -> Network:
        return self.deployment.network

    @property
    def gateway(self) -> Gateway:
        return self.server.gateway

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def live_deployment(
    root: Path,
    replicas: int,
    *,
    spares: int = 1,
    faults: dict[int, Fault] | None = None,
    heartbeat_timeout: int = 120,
    heartbeats: float | None = None,
    **config: Any,
) -> Iterator[Live]:
    """A network, a deployment on ``replicas`` machines (``faults`` by index in the order's machines), its
    replicas, and a served gateway; a generous credit for the default user. Nodes heart-beat every
    ``heartbeats`` seconds if given (else the ledger head moves only when the test makes it). Everything stops on
    the way out."""
    network = make_network(root / "network", heartbeat_timeout=heartbeat_timeout)
    try:
        deployment = make_deployment(network, replicas, spares=spares)
        with Heartbeats(network, heartbeats or 3600.0) as beats:
            machines = deployment.order.machines
            started = start_replicas(network, deployment.order_id, {machines[i]: f for i, f in (faults or {}).items()})
            try:
                network.deposit_credit(deployment.user, deployment.order_id, 100 * UNITS_PER_TOKEN)
                gateway = deployment.gateway(root / "gateway", **config)
                with GatewayServer(gateway) as server:
                    yield Live(deployment, started, server, beats)
            finally:
                for replica in started.values():
                    replica.stop()
    finally:
        network.close()

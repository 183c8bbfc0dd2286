"""Provider nodes serving a deployment: the replica host of each assigned machine starts a replica once its keys
are granted, registers its endpoint, replaces a replica whose engine died, hands over to a reassigned machine,
and stops and wipes everything when the deployment stops; the ledger pays each machine for its serving seconds.

Real parts on one machine: an embedded ledger whose clock the test moves, sim TEE nodes with staked providers,
keepers granting the keys, the ``chat_inference`` engine on the tiny random model (one process per replica).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from tests.engines.test_chat_engine import _adapter as lora_adapter
from tests.ledger.conftest import FakeClock
from tests.node import market as market_module
from tests.node.market import FACTS, Market

from cloister.attest.sim import SimVendor
from cloister.client.deployments import deploy, publish_adapter, stop_deployment
from cloister.client.orders import reassign_order
from cloister.client.sdk import Client
from cloister.consensus.commitment import deployment_digest
from cloister.consensus.endpoint import verify_endpoint
from cloister.engines.bundle import builtin_engine, pack
from cloister.errors import ConfigError, NoEligibleMachine
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import UNITS_PER_TOKEN, ContractParams, Genesis
from cloister.ledger.records import COMPLETED, RUNNING, Endpoint, Offer, Pricing, Restrictions
from cloister.ledger.transactions import DepositStake
from cloister.node.controller import ProviderNode
from cloister.node.serving import ReplicaHost
from cloister.runtime.serving import ReplicaHandle
from cloister.storage import LocalBlobStore

COMPUTE_PRICE = 36_000
"""Units per hour each machine charges: 10 a second."""
MODEL_PRICE = 72_000
"""Units per hour the model owner charges: 20 a second of summed serving time."""
DEPOSIT = 10 * UNITS_PER_TOKEN
QUESTION = FACTS[0][0]


@dataclass
class World:
    market: Market
    clock: FakeClock
    model: Offer
    engine: Offer
    developer: Client
    gateway: Client
    nodes: dict[str, ProviderNode] = field(default_factory=dict)
    files: dict[str, set[Path]] = field(default_factory=dict)
    """Each node's files right after it registered: all a node folder may hold once its replicas are gone."""

    @property
    def ledger(self) -> EmbeddedLedger:
        return self.market.ledger

    def node(self, name: str, *, stake: int = 100) -> ProviderNode:
        node = self.market.node(name, price_per_hour=COMPUTE_PRICE)
        if stake:
            node.wallet.send(DepositStake(stake * UNITS_PER_TOKEN))
        self.nodes[node.machine_id] = node
        self.files[node.machine_id] = _files(node.folder)
        return node

    def host(self, machine_id: str) -> ReplicaHost:
        return self.nodes[machine_id].replica_host()

    def grant(self, *owners: str) -> None:
        for owner in owners:
            assert all(decision.granted for decision in self.market.keeper(owner).run_once()), owner

    def deploy(self, replicas: int, adapters: tuple[str, ...] = ()) -> str:
        order = deploy(
            self.developer,
            model=self.model.offer_id,
            adapters=adapters,
            engine=self.engine.offer_id,
            replicas=replicas,
            gateway=self.gateway.address,
            deposit=DEPOSIT,
        )
        return order.order_id


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("serving")
    clock = FakeClock(int(time.time()))
    vendor = SimVendor.generate()
    params = ContractParams(
        faucet_limit=1_000_000 * UNITS_PER_TOKEN,
        attestation_policy=market_module._chain_policy(),
        sim_roots=(vendor.root_pem,),
    )
    ledger = EmbeddedLedger.create(root / "ledger.db", Genesis("cloister-test", clock.now, params), clock=clock)
    market = Market(root, ledger, LocalBlobStore(root / "blobs"), vendor)
    model_owner, engine_owner = market.party("model-owner"), market.party("engine-owner")
    model = market.publish_model(model_owner, price_per_hour=MODEL_PRICE)
    bundle = root / "chat_inference.bundle"
    bundle.write_bytes(pack(builtin_engine("chat_inference")))
    engine = engine_owner.publish("engine", bundle, pricing=Pricing("free", 0, 0), restrictions=Restrictions())
    world = World(market, clock, model, engine, market.party("developer"), market.party("gateway"))
    try:
        yield world
    finally:
        for node in world.nodes.values():
            node.replica_host().close()
        ledger.close()


@dataclass
class Serving:
    """The shared deployment on two staked machines, and what it answered when it started."""

    order_id: str
    unstaked: ProviderNode
    started: dict[str, list[str]]
    base_ids: list[int]


def _handle(world: World, machine_id: str, order_id: str) -> ReplicaHandle:
    return world.host(machine_id).replicas[order_id]


def _token_ids(url: str, order_id: str) -> list[int]:
    request = {"model": order_id, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 12}
    body = {"request": request, "role": "selected", "created_at": 1}
    response = httpx.post(f"{url}/cloister/v1/execute", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return list(response.json()["response"]["cloister"]["token_ids"])


@pytest.fixture(scope="module")
def serving(world: World) -> Serving:
    world.node("node-a")
    world.node("node-b")
    unstaked = world.node("node-poor", stake=0)
    order_id = world.deploy(2)
    order = world.ledger.order(order_id)
    assert unstaked.machine_id not in order.machines
    world.grant("model-owner", "engine-owner")
    started = {machine_id: world.host(machine_id).sync() for machine_id in order.machines}
    first = _handle(world, order.machines[0], order_id)
    return Serving(order_id, unstaked, started, _token_ids(first.url, order_id))


# --- helpers -----------------------------------------------------------------------------------------------------


def _engine_pids(workspace: Path) -> list[int]:
    """The processes working in ``workspace``: the sandboxed engine (and anything it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == workspace.resolve():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _kill_engine(handle: ReplicaHandle) -> None:
    pids = _engine_pids(handle.prepared.workspace.path)
    assert pids, "the replica's engine runs in its workspace"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: not handle.running(), "the replica to notice its engine died")


def _endpoint(world: World, order_id: str, machine_id: str) -> Endpoint:
    (endpoint,) = [e for e in world.ledger.endpoints(order_id) if e.machine_id == machine_id]
    return endpoint


# --- the shared deployment -----------------------------------------------------------------------------------------


def test_each_assigned_node_starts_a_replica_and_registers_a_signed_endpoint(world: World, serving: Serving) -> None:
    order = world.ledger.order(serving.order_id)
    assert order.state == RUNNING
    assert serving.started == {machine_id: [serving.order_id] for machine_id in order.machines}
    handles = [_handle(world, machine_id, serving.order_id) for machine_id in order.machines]
    endpoints = {e.machine_id: e for e in world.ledger.endpoints(serving.order_id)}
    assert set(endpoints) == set(order.machines)
    assert len({e.deployment_key for e in endpoints.values()}) == 1, "one deployment key for every replica"
    for machine_id, handle in zip(order.machines, handles, strict=True):
        endpoint = endpoints[machine_id]
        assert (endpoint.url, endpoint.deployment_key, endpoint.removed_at) == (handle.url, handle.deployment_key, None)
        verify_endpoint(
            world.ledger.machine(machine_id).loader_signing_key,
            serving.order_id,
            machine_id,
            endpoint.url,
            endpoint.deployment_key,
            endpoint.key_signature,
        )
        health = httpx.get(f"{handle.url}/health", timeout=30).json()
        assert (health["status"], health["order_id"], health["machine_id"]) == ("ok", serving.order_id, machine_id)
    assert _token_ids(handles[1].url, serving.order_id) == serving.base_ids, "replicas agree"


def test_a_second_sync_changes_nothing(world: World, serving: Serving) -> None:
    order = world.ledger.order(serving.order_id)
    before = {m: (_handle(world, m, serving.order_id), _endpoint(world, serving.order_id, m)) for m in order.machines}
    height = world.ledger.head().height
    for machine_id in order.machines:
        assert world.host(machine_id).sync() == []
    after = {m: (_handle(world, m, serving.order_id), _endpoint(world, serving.order_id, m)) for m in order.machines}
    assert after == before and world.ledger.head().height == height


def test_an_unstaked_provider_is_never_assigned(world: World, serving: Serving) -> None:
    serving.unstaked.heartbeat()
    floor = world.ledger.genesis.params.min_serving_stake
    with pytest.raises(NoEligibleMachine) as refused:
        world.deploy(3)
    assert refused.value.details["refusals"][f"provider stake below {floor}"] == 1
    assert world.host(serving.unstaked.machine_id).sync() == []
    assert not world.ledger.orders(machine_id=serving.unstaked.machine_id)


def test_a_replica_whose_engine_was_killed_is_replaced_by_the_next_sync(world: World, serving: Serving) -> None:
    machine_id = world.ledger.order(serving.order_id).machines[0]
    host = world.host(machine_id)
    old = host.replicas[serving.order_id]
    registered = _endpoint(world, serving.order_id, machine_id)
    _kill_engine(old)

    assert host.sync() == [serving.order_id]
    new = host.replicas[serving.order_id]
    assert new is not old and new.running() and new.url != old.url
    assert new.deployment_key == old.deployment_key and new.server.vault.key == old.server.vault.key
    endpoint = _endpoint(world, serving.order_id, machine_id)
    assert (endpoint.url, endpoint.registered_at, endpoint.removed_at) == (new.url, registered.registered_at, None)
    assert not old.prepared.workspace.exists() and not old.prepared.workspace.path.parent.exists()
    assert _token_ids(new.url, serving.order_id) == serving.base_ids
    assert host.sync() == []


def test_a_stale_machine_is_replaced_and_the_new_one_joins_once_every_key_is_granted(
    world: World, serving: Serving
) -> None:
    live, stale = world.ledger.order(serving.order_id).machines
    newcomer = world.node("node-c")
    world.clock.advance(world.ledger.genesis.params.heartbeat_timeout + 1)
    for machine_id in (live, newcomer.machine_id, serving.unstaked.machine_id):
        world.nodes[machine_id].heartbeat()

    order = reassign_order(world.gateway, serving.order_id, stale)
    assert order.machines == (live, newcomer.machine_id) and order.state == RUNNING
    stale_handle = _handle(world, stale, serving.order_id)
    assert world.host(stale).sync() == [] and serving.order_id not in world.host(stale).replicas
    assert not stale_handle.running() and _files(world.nodes[stale].folder) == world.files[stale]
    assert _endpoint(world, serving.order_id, stale).removed_at == world.clock.now

    host = world.host(newcomer.machine_id)
    assert host.sync() == [], "no key granted yet"
    world.grant("model-owner")
    assert host.sync() == [], "the engine's key is still missing"
    assert not host.root.exists() or not _files(host.root)
    world.grant("engine-owner")
    newcomer.serve(once=True)  # a one-shot run starts no replica: it would die, its endpoint left on the ledger
    assert not host.replicas
    assert newcomer.machine_id not in {e.machine_id for e in world.ledger.endpoints(serving.order_id)}
    assert host.sync() == [serving.order_id]
    joined, peer = host.replicas[serving.order_id], _handle(world, live, serving.order_id)
    assert joined.server.vault.key == peer.server.vault.key and joined.deployment_key == peer.deployment_key
    endpoint = _endpoint(world, serving.order_id, newcomer.machine_id)
    assert (endpoint.url, endpoint.deployment_key) == (joined.url, peer.deployment_key)
    assert _token_ids(joined.url, serving.order_id) == serving.base_ids


def test_an_adapter_from_a_fine_tune_is_served_and_changes_the_answer(world: World, serving: Serving) -> None:
    adapter = lora_adapter(world.market.root / "tiny-model", world.market.root / "adapter")
    assert world.engine.content_digest is not None
    offer = publish_adapter(world.developer, adapter, engine_digest=world.engine.content_digest)
    assert offer.kind == "model" and offer.restrictions.engine_digests == (world.engine.content_digest,)
    with pytest.raises(ConfigError, match=r"adapter_config\.json"):
        publish_adapter(world.developer, world.market.root / "tiny-model", engine_digest=world.engine.content_digest)

    world.node("node-d")  # at least one free, live, staked machine
    order_id = world.deploy(1, adapters=(offer.offer_id,))
    (machine_id,) = world.ledger.order(order_id).machines
    world.grant("model-owner", "engine-owner", "developer")
    host = world.host(machine_id)
    assert host.sync() == [order_id]
    handle = host.replicas[order_id]
    health = httpx.get(f"{handle.url}/health", timeout=30).json()
    assert health["deployment_digest"] == deployment_digest(
        order_id, str(world.model.content_digest), [str(offer.content_digest)], world.engine.content_digest
    )
    tuned = _token_ids(handle.url, order_id)
    assert tuned != serving.base_ids

    # The only replica dies: its successor takes the deployment key from the dying replica's own vault.
    _kill_engine(handle)
    assert host.sync() == [order_id]
    assert host.replicas[order_id].deployment_key == handle.deployment_key
    assert _token_ids(host.replicas[order_id].url, order_id) == tuned

    stop_deployment(world.developer, order_id)
    assert host.sync() == [] and not host.replicas
    assert _files(world.nodes[machine_id].folder) == world.files[machine_id]


def test_stopping_pays_each_machine_its_serving_seconds_and_every_node_wipes_its_replica(
    world: World, serving: Serving
) -> None:
    world.clock.advance(600)
    before = world.ledger.order(serving.order_id)
    assert before.started_at is not None
    engines = {
        pid
        for m in before.machines
        for pid in _engine_pids(_handle(world, m, serving.order_id).prepared.workspace.path)
    }
    providers = {m: world.ledger.machine(m).provider for m in world.nodes}
    watched = {*providers.values(), world.model.owner, world.developer.address}
    balances = {address: world.ledger.account(address).balance for address in watched}

    order = stop_deployment(world.developer, serving.order_id)
    assert order.state == COMPLETED
    now = world.clock.now
    served = {}
    for endpoint in world.ledger.endpoints(serving.order_id):
        assert endpoint.removed_at is not None and endpoint.removed_at <= now
        assert (endpoint.removed_at == now) == (endpoint.machine_id in before.machines)
        served[endpoint.machine_id] = endpoint.removed_at - max(endpoint.registered_at, before.started_at)
    assert served[before.machines[0]] == now - before.started_at, "served from the start to the stop"
    assert order.usage_seconds == sum(served.values())
    paid = {address: world.ledger.account(address).balance - balances[address] for address in watched}
    for machine_id, seconds in served.items():
        assert paid[providers[machine_id]] == COMPUTE_PRICE * seconds // 3600, machine_id
    assert paid[world.model.owner] == MODEL_PRICE * order.usage_seconds // 3600
    costs = sum(paid[providers[m]] for m in served) + paid[world.model.owner]
    assert paid[world.developer.address] == before.escrow - costs > 0, "the rest is refunded"

    for machine_id in served:
        host = world.host(machine_id)
        host.sync()
        assert not host.replicas
        assert _files(world.nodes[machine_id].folder) == world.files[machine_id], "no decrypted model left behind"
    assert engines and not any(Path(f"/proc/{pid}").exists() for pid in engines), "every engine stopped"

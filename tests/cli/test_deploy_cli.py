"""`cloister deploy` and `cloister deployment show|fund|stop|withdraw` through typer's runner, on a devnet-like home.

The home is what `cloister devnet up` leaves, minus the subprocesses: a devnet.json naming an embedded ledger
served over HTTP in this process, a local blob store, the devnet's sim vendor and a gateway account. One staked
provider node (in-process) has registered its machine; model owner, engine author and developer act through
the command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.engines.test_chat_engine import _adapter as lora_adapter
from tests.ledger.conftest import ThreadedServer
from typer.testing import CliRunner, Result

from cloister.cli.main import app
from cloister.client.assets import demo_dataset_path
from cloister.client.config import devnet_file
from cloister.client.devnet import Devnet
from cloister.client.sdk import Client
from cloister.engines.tiny import make_tiny_model
from cloister.errors import ConfigError, InvalidConsensusMode, InvalidState, NotAuthorized, RecordNotFound
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import UNITS_PER_TOKEN, Genesis
from cloister.ledger.server import create_app
from cloister.ledger.transactions import CancelOrder, DepositStake
from cloister.node.controller import ProviderNode
from cloister.node.keys import load_or_create_loader_identity
from cloister.node.platform import SimPlatform
from cloister.runtime.archive import pack_folder
from cloister.storage import LocalBlobStore

runner = CliRunner()
UNSET = {"CLOISTER_HOME": None, "CLOISTER_LEDGER": None, "CLOISTER_BLOBS": None, "CLOISTER_ACCOUNT": None}


@dataclass
class Home:
    path: Path
    ledger: EmbeddedLedger

    def invoke(self, *args: str) -> Result:
        return runner.invoke(app, ["--home", str(self.path), *args], env=UNSET)

    def ok(self, *args: str) -> str:
        result = self.invoke(*args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def refused(self, *args: str) -> BaseException:
        result = self.invoke(*args)
        assert result.exit_code != 0 and result.exception is not None, (args, result.output)
        return result.exception

    def account(self, name: str) -> str:
        return str(self.json("account", "create", name, "--fund", "1000")["address"])


@contextmanager
def devnet_home(path: Path) -> Iterator[Home]:
    """A devnet's files around an embedded ledger served by this process."""
    devnet = Devnet(path)
    devnet.dir.mkdir(parents=True)
    vendor = devnet.sim_vendor()
    ledger = EmbeddedLedger.create(devnet.db_path, Genesis.devnet(int(time.time()), sim_roots=(vendor.root_pem,)))
    LocalBlobStore(devnet.blobs_path)
    try:
        with ThreadedServer(create_app(ledger)) as server:
            info = {
                "ledger": "embedded",
                "ledger_url": server.url,
                "blob_store": devnet.blobs_path.resolve().as_uri(),
                "chain_id": ledger.chain_id,
            }
            devnet_file(path).write_text(json.dumps(info))
            yield Home(path, ledger)
    finally:
        ledger.close()


@dataclass
class Market:
    home: Home
    model: str
    engine_digest: str
    gateway: str
    machine: str
    adapter: Path


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    root = tmp_path_factory.mktemp("deploy-cli")
    with devnet_home(root / "home") as home:
        for name in ("alice", "eve", "carol", "dave", "node1"):
            home.account(name)
        gateway = home.account("gateway")
        info = json.loads(devnet_file(home.path).read_text())
        devnet_file(home.path).write_text(json.dumps({**info, "gateway_address": gateway}))

        folder = make_tiny_model(root / "tiny", demo_dataset_path().read_text().splitlines())
        pack_folder(folder, root / "tiny.tar")
        model = home.json("-a", "alice", "offer", "publish", "model", str(root / "tiny.tar"), "--price-per-hour", "2")
        engine = home.json("-a", "eve", "engine", "publish", "chat_inference")

        operator = Client(home=home.path, account="node1", ledger=home.ledger)
        operator.wallet.send(DepositStake(100 * UNITS_PER_TOKEN))
        node_folder = root / "node1"
        node = ProviderNode(
            ledger=home.ledger,
            store=LocalBlobStore(Devnet(home.path).blobs_path),
            operator=operator.identity,
            loader=load_or_create_loader_identity(node_folder),
            platform=SimPlatform(Devnet(home.path).sim_vendor(), "node1-chip"),
            folder=node_folder,
        )
        registration = node.register()
        yield Market(
            home,
            model["offer_id"],
            engine["content_digest"],
            gateway,
            registration.machine_id,
            lora_adapter(folder, root / "adapter"),
        )


def _offers(home: Home, owner: str) -> list[str]:
    return [o.offer_id for o in home.ledger.offers(owner=owner)]


def _address(home: Home, name: str) -> str:
    return Client(home=home.path, account=name, ledger=home.ledger).address


def test_deploy_with_an_adapter_fund_stop_and_withdraw(market: Market) -> None:
    home = market.home
    carol, dave = _address(home, "carol"), _address(home, "dave")
    order = home.json(
        "-a", "carol", "deploy", "--model", market.model, "--replicas", "1", "--deposit", "5", "--lease-hours", "2",
        "--adapter", str(market.adapter), "--gateway", market.gateway, "--consensus", "sampling:1",
        "--price-per-1k-tokens", "0.5",
    )  # fmt: skip
    assert (order["kind"], order["state"], order["owner"]) == ("inference", "pending_grants", carol)
    assert order["machines"] == [market.machine] and order["deposit"] == 5 * UNITS_PER_TOKEN
    assert order["params"] == {"consensus": "sampling:1", "gateway": market.gateway, "price_per_1k_tokens": 500_000}
    (adapter_id,) = order["adapter_offers"]
    adapter = home.ledger.offer(adapter_id)
    assert adapter.owner == carol and adapter.kind == "model" and adapter.pricing.model == "free"
    assert adapter.restrictions.engine_digests == (market.engine_digest,), "only the inference engine reads it"
    order_id = order["order_id"]

    shown = home.ok("deployment", "show", order_id)
    assert f"deployment {order_id} pending_grants, gateway {market.gateway}, 0.5 per 1k tokens" in shown
    assert "consensus sampling:1" in shown and "(waiting for grants)" in shown
    for owner in ("alice", "eve", "carol"):
        assert "granted" in home.ok("-a", owner, "keeper", "run", "--once")
    assert "(granted; the replica is starting)" in home.ok("deployment", "show", order_id)
    shown = home.json("deployment", "show", order_id)
    assert shown["order"]["state"] == "ready" and shown["endpoints"] == shown["disputes"] == shown["timeouts"] == []

    assert home.ok("-a", "dave", "deployment", "fund", order_id, "3").strip() == f"credit for {order_id}: 3"
    assert home.ledger.credit(order_id, dave).balance == 3 * UNITS_PER_TOKEN
    assert isinstance(home.refused("-a", "dave", "deployment", "withdraw", order_id), InvalidState)
    assert isinstance(home.refused("-a", "dave", "deployment", "stop", order_id), NotAuthorized)

    balance = home.ledger.account(carol).balance
    assert "completed after 0 serving seconds" in home.ok("-a", "carol", "deployment", "stop", order_id)
    assert home.ledger.account(carol).balance - balance == 5 * UNITS_PER_TOKEN, "free offers, nothing served"
    assert home.ok("-a", "dave", "deployment", "withdraw", order_id, "1").strip() == f"withdrew 1 from {order_id}"
    assert home.ok("-a", "dave", "deployment", "withdraw", order_id).strip() == f"withdrew 2 from {order_id}"
    assert home.ledger.credit(order_id, dave).balance == 0
    assert "(never served)" in home.ok("deployment", "show", order_id)


def test_deploy_defaults_to_the_devnets_gateway(market: Market) -> None:
    home = market.home
    out = home.ok("-a", "carol", "deploy", "--model", market.model, "--replicas", "1", "--deposit", "48")
    assert "pending_grants" in out and market.machine in out
    order_id = out.split()[1]
    order = home.ledger.order(order_id)
    assert order.params == {"gateway": market.gateway, "price_per_1k_tokens": 0} and order.adapter_offers == ()
    stopped = home.ok("-a", "carol", "deployment", "stop", order_id)
    assert "cancelled before any replica served" in stopped and home.ledger.order(order_id).state == "cancelled"


def test_deploy_refuses_bad_input_before_publishing_anything(market: Market, tmp_path: Path) -> None:
    home = market.home
    before = _offers(home, _address(home, "carol"))
    deploy = ("-a", "carol", "deploy", "--model", market.model, "--replicas", "1", "--deposit", "1")

    error = home.refused(*deploy, "--adapter", str(market.adapter), "--consensus", "sampling:0")
    assert isinstance(error, InvalidConsensusMode)
    not_an_adapter = tmp_path / "weights"
    not_an_adapter.mkdir()
    (not_an_adapter / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    error = home.refused(*deploy, "--adapter", str(not_an_adapter))
    assert isinstance(error, ConfigError) and "adapter_config.json" in error.message
    error = home.refused(*deploy, "--adapter", "nowhere")
    assert isinstance(error, ConfigError) and "neither an adapter folder nor a fine-tuning order id" in error.message
    error = home.refused(*deploy, "--engine", market.model)
    assert isinstance(error, ConfigError) and "not an engine" in error.message
    assert _offers(home, _address(home, "carol")) == before, "no adapter offer left behind"


def test_show_refuses_a_fine_tuning_order(market: Market) -> None:
    home = market.home
    engine = home.json("-a", "eve", "engine", "publish", "lora_finetune")
    dataset = home.json("-a", "alice", "offer", "publish", "dataset", str(demo_dataset_path()), "--free")
    order = home.json(
        "-a", "carol", "order", "create", "--model", market.model, "--dataset", dataset["offer_id"],
        "--engine", engine["offer_id"], "--deposit", "2",
    )  # fmt: skip
    try:
        error = home.refused("deployment", "show", order["order_id"])
        assert isinstance(error, InvalidState) and "cloister order show" in error.message
        assert isinstance(home.refused("deployment", "show", "or-" + "0" * 16), RecordNotFound)
    finally:
        Client(home=home.path, account="carol", ledger=home.ledger).wallet.send(CancelOrder(order["order_id"]))


def test_deploy_without_a_gateway_or_an_engine_offer_says_what_to_do(tmp_path: Path) -> None:
    with devnet_home(tmp_path / "home") as home:
        home.account("carol")
        gateway = home.account("gateway")
        deploy = ("-a", "carol", "deploy", "--model", "of-" + "0" * 16, "--deposit", "1")
        error = home.refused(*deploy)
        assert isinstance(error, ConfigError) and "--gateway ADDRESS" in error.message, "this devnet has no gateway"
        error = home.refused(*deploy, "--gateway", gateway)
        assert isinstance(error, RecordNotFound) and "cloister engine publish chat_inference" in error.message

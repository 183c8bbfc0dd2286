"""Fail-over: a node process killed with SIGKILL mid-training; the order moves to another machine and resumes.

The first node is a real subprocess sharing the ledger file and blob store, so the kill is real.
The tiny-model engine is deterministic given the seed, so the resumed adapter must equal an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.node import market as market_module
from tests.node.market import DEVNET_POLICY, Market, order_params

from cloister.attest.sim import SimVendor
from cloister.client.orders import create_order, fetch_result, reassign_order
from cloister.client.sdk import Client
from cloister.crypto.identity import Identity
from cloister.errors import BindingMismatch, InvalidSignature, InvalidState, MalformedInput, RecordNotFound
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import UNITS_PER_TOKEN, ContractParams, Genesis
from cloister.ledger.records import COMPLETED, PENDING_GRANTS, READY, Order, latest_released
from cloister.ledger.records import Checkpoint as CheckpointRecord
from cloister.node.resume import CheckpointNotice, fetch_notice, publish_notice
from cloister.provenance.report import Checkpoint
from cloister.storage import LocalBlobStore

PRICE = 3600 * 10  # 10 units a second
STEPS, EVERY = 200, 4  # long enough that the kill lands mid-training even on an idle machine

NODE_SCRIPT = """
import sys
from pathlib import Path
from cloister.attest.sim import SimVendor
from cloister.client.sdk import Client
from cloister.ledger.embedded import EmbeddedLedger
from cloister.node.controller import ProviderNode
from cloister.node.keys import load_or_create_loader_identity
from cloister.node.platform import SimPlatform
from cloister.storage import LocalBlobStore

root = Path(sys.argv[1])
ledger = EmbeddedLedger.open(root / "ledger.db")
store = LocalBlobStore(root / "blobs")
folder = root / "node1" / "node"
node = ProviderNode(
    ledger=ledger,
    store=store,
    operator=Client(home=root / "node1", ledger=ledger, store=store).identity,
    loader=load_or_create_loader_identity(folder),
    platform=SimPlatform(SimVendor.generate(), "unused"),  # the machine is registered already: reused
    folder=folder,
    price_per_hour=int(sys.argv[2]),
    threads=1,
)
node.serve(poll_interval=0.2, heartbeat_interval=0.5)
"""


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    vendor = SimVendor.generate()
    params = ContractParams(
        faucet_limit=1_000_000 * UNITS_PER_TOKEN,
        attestation_policy=market_module._chain_policy(),
        sim_roots=(vendor.root_pem,),
        heartbeat_timeout=2,
    )
    ledger = EmbeddedLedger.create(tmp_path / "ledger.db", Genesis("cloister-test", int(time.time()), params))
    yield Market(tmp_path, ledger, LocalBlobStore(tmp_path / "blobs"), vendor)
    ledger.close()


def _params() -> dict[str, object]:
    return {**order_params(), "steps": STEPS, "checkpoint_every": EVERY}


def _order(market: Market, developer: Client, offers: dict[str, str]) -> Order:
    order = create_order(
        developer,
        model=offers["model"],
        datasets=[offers["dataset"]],
        engine=offers["engine"],
        params=_params(),
        lease_hours=1,
        deposit=100 * UNITS_PER_TOKEN,
    )
    for name in ("model", "clinic", "author"):
        assert all(d.granted for d in market.keeper(name).run_once())
    return market.ledger.order(order.order_id)


def _kill_tree(proc: subprocess.Popen[bytes], folder: Path) -> None:
    """SIGKILL the node, then the engine it started (its own session, working in the node's folder)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


def _wait_for(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_killed_node_is_replaced_and_the_job_resumes_from_its_checkpoint(market: Market, tmp_path: Path) -> None:
    model_owner, clinic, author = market.party("model"), market.party("clinic"), market.party("author")
    developer, watchdog = market.party("developer"), market.party("watchdog")
    node1 = market.node("node1", price_per_hour=PRICE)
    offers = {
        "model": market.publish_model(model_owner, price_per_hour=2 * PRICE).offer_id,
        "dataset": market.publish_dataset(clinic, "clinic").offer_id,
        "engine": market.publish_engine(author).offer_id,
    }
    order = _order(market, developer, offers)
    assert order.state == READY and order.machines == (node1.machine_id,)

    proc = subprocess.Popen(
        [sys.executable, "-c", NODE_SCRIPT, str(tmp_path), str(PRICE)],
        cwd=Path(__file__).parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: any(c.step >= EVERY for c in market.ledger.checkpoints(order.order_id)), "a checkpoint")
    finally:
        _kill_tree(proc, node1.folder)
    (recorded,) = market.ledger.checkpoints(order.order_id)
    assert EVERY <= recorded.step < STEPS, "killed mid-training"
    assert market.ledger.order(order.order_id).state != COMPLETED

    node2 = market.node("node2", price_per_hour=PRICE)
    with pytest.raises(InvalidState, match="heartbeat"):
        reassign_order(watchdog, order.order_id)  # node1 beat moments ago
    time.sleep(3.2)  # past the heartbeat timeout of 2 s
    node2.heartbeat()
    moved = reassign_order(watchdog, order.order_id)
    assert moved.state == PENDING_GRANTS and moved.machines == (node2.machine_id,)
    released = latest_released(market.ledger.checkpoints(order.order_id))
    assert released is not None and released.machine_id == node1.machine_id and released.notice_uri is not None
    share = released.usage_seconds  # what node1's provider is paid for

    assert node2.run_ready() == [], "nothing runs before the content owners re-grant"
    for name in ("model", "clinic", "author"):
        assert all(d.granted for d in market.keeper(name).run_once())
    assert market.ledger.order(order.order_id).state == READY
    assert node2.run_ready() == [], "the order waits for the owner's checkpoint grant instead of starting over"
    owner_keeper = market.keeper("developer")
    (decision,) = owner_keeper.run_once()
    assert decision.granted and decision.machine_id == node2.machine_id
    assert owner_keeper.run_once() == [], "granted once"
    (grant,) = market.ledger.resume_grants(order.order_id)
    assert (grant.machine_id, grant.checkpoint_digest) == (node2.machine_id, released.checkpoint_digest)

    (result,) = node2.run_ready()
    done = market.ledger.order(order.order_id)
    assert done.state == COMPLETED and done.report_digest == result.report_digest
    report = result.report.report
    assert report.checkpoints[0].step == released.step, "the report names the checkpoint it resumed from"
    assert report.usage.steps == STEPS - released.step, "only the steps after the checkpoint ran on node2"
    out = tmp_path / "resumed"
    fetch_result(developer, order.order_id, out, policy=DEVNET_POLICY, roots=market.roots)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == released.step

    # usage already paid is not charged again: node1 is paid its recorded share, node2 its own seconds
    usage = report.usage.seconds
    assert done.usage_seconds == share + usage
    balance = market.ledger.account
    assert balance(node1.operator.address).balance == 1000 * UNITS_PER_TOKEN + 10 * share
    assert balance(node2.operator.address).balance == 1000 * UNITS_PER_TOKEN + 10 * usage
    assert balance(model_owner.address).balance == 1000 * UNITS_PER_TOKEN + 20 * (share + usage)
    spent = 5 * UNITS_PER_TOKEN + 3 * UNITS_PER_TOKEN + 30 * (share + usage)
    assert balance(developer.address).balance == 1000 * UNITS_PER_TOKEN - spent

    # an uninterrupted run of the same order trains the very same adapter
    node2.heartbeat()
    reference = _order(market, market.party("developer2"), offers)
    assert reference.machines == (node2.machine_id,)
    assert len(node2.run_ready()) == 1
    ref_out = tmp_path / "reference"
    fetch_result(
        market.clients["developer2"],
        reference.order_id,
        ref_out,
        policy=DEVNET_POLICY,
        roots=market.roots,
    )
    ref_metrics = json.loads((ref_out / "metrics.json").read_text())
    assert ref_metrics["resumed_from_step"] == 0
    assert metrics["loss_curve"] == ref_metrics["loss_curve"]
    assert metrics["evaluation"] == ref_metrics["evaluation"]
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (out / "adapter" / name).read_bytes() == (ref_out / "adapter" / name).read_bytes()


def test_checkpoint_notices_refuse_malformed_truncated_tampered_and_replayed_input(tmp_path: Path) -> None:
    loader, other = Identity.generate(), Identity.generate()
    digest = "sha256:" + "ab" * 32
    point = Checkpoint(step=8, digest=digest, uri="file:///x", at=1)
    notice = CheckpointNotice("or-" + "0" * 16, "mc-" + "1" * 16, point, b"sealed")
    data = notice.to_bytes(loader)
    assert CheckpointNotice.parse(data, loader.public.signing_key) == notice
    with pytest.raises(MalformedInput):
        CheckpointNotice.parse(data[:-5], loader.public.signing_key)
    with pytest.raises(MalformedInput):
        CheckpointNotice.parse(b"[]", loader.public.signing_key)
    with pytest.raises(MalformedInput):
        CheckpointNotice.parse(
            data.replace(b"checkpoint-notice/v1", b"checkpoint-notice/v2"), loader.public.signing_key
        )
    with pytest.raises(InvalidSignature):
        CheckpointNotice.parse(data.replace(b'"step":8', b'"step":9'), loader.public.signing_key)
    with pytest.raises(InvalidSignature):
        CheckpointNotice.parse(notice.to_bytes(other), loader.public.signing_key)

    # replayed: a valid notice named by the ledger for another machine, or for a checkpoint it did not record
    store = LocalBlobStore(tmp_path / "blobs")
    uri = publish_notice(store, notice, loader)
    record = CheckpointRecord(notice.order_id, notice.machine_id, "of-" + "3" * 16, 8, 10, digest, True, 1, uri)
    assert fetch_notice(store, record, loader.public.signing_key) == notice
    with pytest.raises(BindingMismatch):
        fetch_notice(store, dataclasses.replace(record, machine_id="mc-" + "2" * 16), loader.public.signing_key)
    with pytest.raises(BindingMismatch):
        fetch_notice(store, dataclasses.replace(record, step=12), loader.public.signing_key)
    with pytest.raises(InvalidSignature):
        fetch_notice(store, record, other.public.signing_key)
    with pytest.raises(RecordNotFound):
        fetch_notice(store, dataclasses.replace(record, notice_uri=None), loader.public.signing_key)

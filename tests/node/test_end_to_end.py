"""A whole fine-tuning order across five parties: keepers grant, the node runs the real engine, the owner opens it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.node.market import DEVNET_POLICY, Market, make_market, order_params

from cloister.attest.checks import Checklist
from cloister.client.orders import create_order, fetch_result, verify_manifest_file, verify_order_report
from cloister.engines.bundle import builtin_engine, bundle_digest
from cloister.errors import IntegrityError, InvalidSignature, NotAuthorized
from cloister.ledger.genesis import UNITS_PER_TOKEN
from cloister.ledger.records import COMPLETED, PENDING_GRANTS, READY, Restrictions
from cloister.node.delivery import fetch_delivery
from cloister.runtime.results import open_result


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    built = make_market(tmp_path)
    yield built
    built.ledger.close()


def test_order_runs_settles_and_only_the_owner_opens_the_adapter(market: Market, tmp_path: Path) -> None:
    model_owner, clinic, lab = market.party("model"), market.party("clinic"), market.party("lab")
    author, developer = market.party("author"), market.party("developer")
    node = market.node("provider", price_per_hour=3600 * 10)
    lora = bundle_digest(builtin_engine("lora_finetune"))
    model = market.publish_model(model_owner, price_per_hour=3600 * 20)
    engine = market.publish_engine(author)
    assert engine.content_digest == lora
    datasets = [
        market.publish_dataset(clinic, "clinic", Restrictions(engine_digests=(lora,))),
        market.publish_dataset(lab, "lab"),
    ]
    order = create_order(
        developer,
        model=model.offer_id,
        datasets=[d.offer_id for d in datasets],
        engine=engine.offer_id,
        params=order_params(),
        lease_hours=1,
        deposit=100 * UNITS_PER_TOKEN,
    )
    assert order.machines == (node.machine_id,) and order.state == PENDING_GRANTS

    assert node.run_ready() == [], "nothing runs before every owner granted"
    for name in ("model", "clinic", "lab"):
        decisions = market.keeper(name).run_once()
        assert decisions and all(d.granted for d in decisions), decisions
    assert market.ledger.order(order.order_id).state == PENDING_GRANTS, "the engine author has not granted yet"
    assert all(d.granted for d in market.keeper("author").run_once())
    assert market.ledger.order(order.order_id).state == READY

    (result,) = node.run_ready()
    done = market.ledger.order(order.order_id)
    assert done.state == COMPLETED and done.report_digest == result.report_digest
    assert done.manifest_digest == result.manifest_digest is not None and done.delivery_uri is not None
    assert done.usage_seconds == result.report.report.usage.seconds

    # payments: fixed prices in full, per-hour prices by the metered second, the rest refunded
    usage = done.usage_seconds
    assert market.ledger.account(author.address).balance == 1005 * UNITS_PER_TOKEN
    assert market.ledger.account(clinic.address).balance == 1003 * UNITS_PER_TOKEN
    assert market.ledger.account(model_owner.address).balance == 1000 * UNITS_PER_TOKEN + 20 * usage
    assert market.ledger.account(node.operator.address).balance == 1000 * UNITS_PER_TOKEN + 10 * usage
    spent = 11 * UNITS_PER_TOKEN + 30 * usage
    assert market.ledger.account(developer.address).balance == 1000 * UNITS_PER_TOKEN - spent

    out = tmp_path / "result"
    opened = fetch_result(developer, order.order_id, out, policy=DEVNET_POLICY, roots=market.roots)
    assert (out / "adapter" / "adapter_config.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["loss_curve"], "the engine really trained"
    names = [check.name for check in opened.verified.checklist.items]
    for expected in (
        "cpu.chip_chain",
        "cpu.report_signature",
        "loader_binding",
        "loader key",
        "signature",
        "ledger digest",
        "offers",
        "manifest subjects",
        "manifest digest",
    ):
        assert any(name == expected or name.endswith(expected) for name in names), (expected, names)
    assert opened.verified.manifest is not None
    assert {ref.offer_id for ref in opened.verified.manifest.predicate.datasets} == {d.offer_id for d in datasets}

    verify_manifest_file(market.ledger, (out / "manifest.json").read_bytes(), policy=DEVNET_POLICY, roots=market.roots)

    # nobody else opens the adapter: not the provider, not a data owner
    for other in (market.clients["provider"], clinic):
        with pytest.raises(NotAuthorized):
            fetch_result(other, order.order_id, tmp_path / "stolen", policy=DEVNET_POLICY)
    delivery = fetch_delivery(market.store, done)
    report = opened.verified.report
    with pytest.raises(IntegrityError):
        open_result(
            market.store,
            report.outputs[0],
            delivery.result_keys[report.outputs[0].name],
            market.clients["provider"].identity,
            order_id=order.order_id,
            dest_dir=tmp_path / "stolen",
        )

    # a report altered after signing fails the signature check, and says so
    forged = delivery.report.replace(b'"seconds":', b'"seconds":1', 1)
    checklist = Checklist()
    with pytest.raises(InvalidSignature):
        verify_order_report(market.ledger, forged, policy=DEVNET_POLICY, roots=market.roots, checklist=checklist)
    assert not checklist.items[-1].passed and checklist.items[-1].name == "signature"

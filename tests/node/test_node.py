"""The node's registration, its failure path, and the delivery document's parser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.node.market import Market, make_market, order_params

from cloister.client.orders import create_order
from cloister.errors import BlobNotFound, InvalidState, MalformedInput
from cloister.ledger.genesis import UNITS_PER_TOKEN
from cloister.ledger.records import FAILED, Order
from cloister.node.delivery import Delivery, fetch_delivery, publish_delivery
from cloister.node.keys import LOADER_KEY_FILE, load_or_create_loader_identity
from cloister.provenance.report import OrderReport


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    built = make_market(tmp_path)
    yield built
    built.ledger.close()


def test_loader_keys_are_private_and_registration_is_reused(market: Market) -> None:
    node = market.node("provider")
    assert (node.folder / LOADER_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert load_or_create_loader_identity(node.folder).address == node.loader.address
    first = node.registration
    assert node.register() == first, "the same folder reuses its machine"
    machine = node.machine()
    assert machine.loader_sealing_key == node.loader.public.sealing_key and machine.attestation_verdict == "simulated"
    node.heartbeat()


def test_a_tampered_blob_fails_the_order_with_the_reason_and_leaves_no_plaintext(market: Market) -> None:
    node = market.node("provider")
    owners = [market.party(name) for name in ("model", "clinic", "author", "developer")]
    model, dataset, engine = (
        market.publish_model(owners[0]),
        market.publish_dataset(owners[1], "clinic"),
        market.publish_engine(owners[2]),
    )
    order = create_order(
        owners[3],
        model=model.offer_id,
        datasets=[dataset.offer_id],
        engine=engine.offer_id,
        params=order_params(),
        lease_hours=1,
        deposit=100 * UNITS_PER_TOKEN,
    )
    for name in ("model", "clinic", "author"):
        market.keeper(name).run_once()
    blob = Path(str(dataset.blob_uri).removeprefix("file://"))
    data = bytearray(blob.read_bytes())
    data[-40] ^= 1
    blob.write_bytes(bytes(data))

    (result,) = node.run_ready()
    failed = market.ledger.order(order.order_id)
    assert failed.state == FAILED and dataset.offer_id in str(failed.failure_reason)
    assert market.ledger.account(owners[3].address).balance == 1000 * UNITS_PER_TOKEN, "the whole escrow came back"
    assert not (node.folder / "work" / order.order_id).exists()
    assert failed.delivery_uri is not None and failed.manifest_digest is None
    delivery = fetch_delivery(market.store, failed)
    report = OrderReport.from_json(json.loads(delivery.report)["report"])
    assert report.outcome == "failed" and report.outputs == () and delivery.manifest is None
    assert result.report_digest and delivery.result_keys == {}


def test_delivery_parser_refuses_malformed_truncated_and_tampered_documents(market: Market) -> None:
    good = Delivery("or-0123456789abcdef", b'{"report":1}', None, {"adapter.tar": b"key"})
    assert Delivery.parse(good.to_bytes()) == good
    data = good.to_bytes()
    for bad in (data[:-5], b"[]", data.replace(b"cloister/delivery/v1", b"cloister/delivery/v9")):
        with pytest.raises(MalformedInput):
            Delivery.parse(bad)
    tampered = json.loads(data)
    tampered["result_keys"]["adapter.tar"] = "not base64!"
    with pytest.raises(MalformedInput):
        Delivery.parse(json.dumps(tampered).encode())
    tampered = {**json.loads(data), "extra": 1}
    with pytest.raises(MalformedInput):
        Delivery.parse(json.dumps(tampered).encode())
    with pytest.raises(InvalidState, match="names no delivery"):
        fetch_delivery(market.store, _order("or-0123456789abcdef", None))
    missing = (market.store.root / "ab" / ("ab" * 32)).as_uri()
    with pytest.raises(BlobNotFound):
        fetch_delivery(market.store, _order("or-0123456789abcdef", missing))


def test_a_delivery_named_for_another_order_is_refused(market: Market) -> None:
    uri = publish_delivery(market.store, Delivery("or-0123456789abcdef", b"{}", None, {}))
    assert fetch_delivery(market.store, _order("or-0123456789abcdef", uri)).order_id == "or-0123456789abcdef"
    with pytest.raises(MalformedInput, match="is for order"):  # replayed under another order id
        fetch_delivery(market.store, _order("or-fedcba9876543210", uri))


def _order(order_id: str, delivery_uri: str | None) -> Order:
    """A completed order record naming ``delivery_uri`` (only the fields a delivery is checked against matter)."""
    offer = "of-0123456789abcdef"
    return Order(
        order_id,
        "cl" + "ab" * 20,
        "finetune",
        offer,
        (offer,),
        offer,
        None,
        {},
        1,
        1,
        0,
        0,
        "completed",
        ("mc-0123456789abcdef",),
        0,
        0,
        0,
        0,
        None,
        None,
        delivery_uri=delivery_uri,
    )

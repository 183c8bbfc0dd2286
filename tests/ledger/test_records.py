"""Records: exact JSON round trips, and every way a stored or served record can be malformed or tampered."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest

from cloister.errors import MalformedInput
from cloister.ledger.records import (
    FIXED,
    FREE,
    PER_HOUR,
    REVENUE_SHARE,
    Account,
    Challenge,
    Checkpoint,
    Credit,
    DeploymentTerms,
    Dispute,
    Endpoint,
    JsonRecord,
    KeyGrant,
    Machine,
    MachineSpecs,
    Offer,
    Order,
    Pricing,
    Provider,
    Restrictions,
    ResumeGrant,
    Timeout,
    derive_id,
    is_record_id,
    latest_released,
)

ADDR = "cl" + "ab" * 20
DIGEST = "sha256:" + "0f" * 32
MACHINE = "mc-0123456789abcdef"
OFFER = "of-0123456789abcdef"
OFFER2 = "of-fedcba9876543210"
ORDER = "or-0123456789abcdef"

SPECS = MachineSpecs(cpu_cores=8, memory_gib=32, gpus=("H100", "H100"), disk_gib=500)
RECORDS: list[JsonRecord] = [
    Account(ADDR, "alice", b"\x01" * 32, b"\x02" * 32, balance=5, stake=7, nonce=3),
    Provider(ADDR, "acme", ""),
    SPECS,
    Machine(
        MACHINE,
        ADDR,
        "sim",
        "eu-west",
        SPECS,
        b"\x00evidence\xff",
        b"\x03" * 32,
        b"\x04" * 32,
        10,
        20,
        True,
        DIGEST,
        "simulated",
    ),
    Pricing(PER_HOUR, 2_000_000, 0),
    Restrictions(("sim", "snp"), ("eu-west",), (DIGEST,), 24),
    Offer(
        OFFER,
        ADDR,
        "model",
        "SmolLM2",
        "small",
        DIGEST,
        "file:///x",
        1234,
        Pricing(FIXED, 9, 0),
        Restrictions(),
        (),
        100,
        True,
    ),
    Offer(
        OFFER2,
        ADDR,
        "compute",
        "box",
        "",
        None,
        None,
        None,
        Pricing(FREE, 0, 0),
        Restrictions(),
        (MACHINE,),
        1,
        False,
    ),
    Order(
        ORDER,
        ADDR,
        "finetune",
        OFFER,
        (OFFER2,),
        OFFER,
        None,
        {"epochs": 2, "lr": "2e-4"},
        3,
        1,
        100,
        100,
        "pending_grants",
        (MACHINE,),
        5,
        None,
        None,
        0,
        None,
        None,
    ),
    Order(
        ORDER,
        ADDR,
        "finetune",
        OFFER,
        (OFFER2,),
        OFFER,
        OFFER2,
        {},
        3,
        1,
        100,
        0,
        "failed",
        (MACHINE,),
        5,
        6,
        7,
        0,
        DIGEST,
        "out of memory",
    ),
    Challenge(ADDR, b"\x05" * 32, 11, used=False),
    KeyGrant(ORDER, OFFER, MACHINE, ADDR, b"sealed-bytes", 9),
]
CHALLENGE = RECORDS[-2]
DEPLOYMENT = Order(
    ORDER,
    ADDR,
    "inference",
    OFFER,
    (),
    OFFER,
    OFFER2,
    {"price_per_1k_tokens": 2000, "gateway": ADDR},
    3,
    2,
    100,
    100,
    "running",
    (MACHINE, "mc-1123456789abcdef"),
    5,
    6,
    None,
    0,
    None,
    None,
    adapter_offers=(OFFER2,),
)
COMPLETED = dataclasses.replace(
    DEPLOYMENT,
    kind="finetune",
    dataset_offers=(OFFER2,),
    adapter_offers=(),
    state="completed",
    manifest_digest=DIGEST,
    delivery_uri="file:///d",
)
CHECKPOINT = Checkpoint(ORDER, MACHINE, OFFER2, 4, 1800, DIGEST, True, 12, "file:///notice")
ENDPOINT = Endpoint(ORDER, MACHINE, "https://node-1.example:8443/v1", b"\x07" * 32, b"\x09" * 64, 20, None)
DISPUTE = Dispute("dp-0123456789abcdef", ORDER, DIGEST, (b"one", b"two"), DIGEST, (MACHINE,), (), 50, ADDR, 30)
INFERENCE_RECORDS: list[JsonRecord] = [
    DEPLOYMENT,
    COMPLETED,
    CHECKPOINT,
    Checkpoint(ORDER, MACHINE, OFFER2, 0, 0, None, False, 12, None),
    ResumeGrant(ORDER, MACHINE, DIGEST, b"sealed", 13),
    ENDPOINT,
    Endpoint(ORDER, MACHINE, "http://127.0.0.1:9000", b"\x07" * 32, b"\x09" * 64, 20, 40),
    Credit(ORDER, ADDR, 10, 5, 21),
    DISPUTE,
    Dispute("dp-0123456789abcdef", ORDER, DIGEST, (b"one", b"two", b"three"), None, (), (), 0, ADDR, 30),
    Timeout(ORDER, MACHINE, DIGEST, 7, 31),
]


@pytest.mark.parametrize("record", RECORDS + INFERENCE_RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip(record: JsonRecord) -> None:
    data = record.to_json()
    assert type(record).from_json(data) == record


@pytest.mark.parametrize("record", RECORDS + INFERENCE_RECORDS, ids=lambda r: type(r).__name__)
def test_truncated_and_extended_records_are_refused(record: JsonRecord) -> None:
    data = record.to_json()
    for name in data:
        truncated = {k: v for k, v in data.items() if k != name}
        with pytest.raises(MalformedInput, match=f"missing {name}"):
            type(record).from_json(truncated)
    with pytest.raises(MalformedInput, match="unknown extra"):
        type(record).from_json({**data, "extra": 1})
    for junk in (None, [], "text", 3):
        with pytest.raises(MalformedInput, match="must be a JSON object"):
            type(record).from_json(junk)


def test_bytes_are_hex_except_evidence_and_sealed_keys() -> None:
    machine = RECORDS[3].to_json()
    assert machine["loader_signing_key"] == "03" * 32
    assert base64.b64decode(machine["tcb_evidence"]) == b"\x00evidence\xff"
    grant = RECORDS[-1].to_json()
    assert base64.b64decode(grant["sealed_key"]) == b"sealed-bytes"
    assert RECORDS[0].to_json()["signing_key"] == "01" * 32


def _tampered(record: JsonRecord, **changes: Any) -> dict[str, Any]:
    return {**record.to_json(), **changes}


@pytest.mark.parametrize(
    ("record", "changes", "field"),
    [
        (RECORDS[0], {"balance": -1}, "balance"),
        (RECORDS[0], {"balance": 1 << 63}, "balance"),
        (RECORDS[0], {"nonce": True}, "nonce"),
        (RECORDS[0], {"nonce": 1.0}, "nonce"),
        (RECORDS[0], {"address": "cl" + "AB" * 20}, "address"),
        (RECORDS[0], {"signing_key": "01" * 31}, "signing_key"),
        (RECORDS[0], {"signing_key": "zz" * 32}, "signing_key"),
        (RECORDS[0], {"signing_key": "AB" * 32}, "signing_key"),
        (RECORDS[0], {"name": ""}, "name"),
        (RECORDS[0], {"name": "x" * 129}, "name"),
        (RECORDS[3], {"tcb_evidence": "not base64!"}, "tcb_evidence"),
        (RECORDS[3], {"tcb_evidence": ""}, "tcb_evidence"),
        (RECORDS[3], {"tcb_evidence": "AGV2aWRlbmNl/w"}, "tcb_evidence"),  # padding stripped
        (RECORDS[3], {"tcb_evidence": "AGV2aWRlbmNl/x=="}, "tcb_evidence"),  # non-zero spare bits
        (RECORDS[3], {"loader_signing_key": "03 " * 31 + "03"}, "loader_signing_key"),
        (RECORDS[3], {"platform": "bad platform"}, "platform"),
        (RECORDS[3], {"machine_id": "mc-XYZ"}, "machine_id"),
        (RECORDS[3], {"active": 1}, "active"),
        (RECORDS[3], {"specs": {"cpu_cores": 0, "memory_gib": 1, "gpus": [], "disk_gib": 1}}, "cpu_cores"),
        (RECORDS[3], {"attestation_digest": "sha256:xyz"}, "attestation_digest"),
        (RECORDS[3], {"attestation_verdict": "maybe"}, "attestation_verdict"),
        (CHALLENGE, {"nonce": "00" * 31}, "nonce"),
        (CHALLENGE, {"used": "no"}, "used"),
        (CHALLENGE, {"provider": MACHINE}, "provider"),
        (RECORDS[6], {"content_digest": "sha256:" + "0F" * 32}, "content_digest"),
        (RECORDS[6], {"kind": "weights"}, "kind"),
        (RECORDS[6], {"offer_id": MACHINE}, "offer_id"),
        (RECORDS[5], {"platforms": ["sim", "sim"]}, "platforms"),
        (RECORDS[5], {"engine_digests": ["nope"]}, "engine_digests"),
        (RECORDS[5], {"max_lease_hours": 0}, "max_lease_hours"),
        (RECORDS[8], {"state": "paused"}, "state"),
        (RECORDS[8], {"params": []}, "params"),
        (RECORDS[8], {"dataset_offers": []}, "dataset_offers"),
        (RECORDS[8], {"machines": "mc-0123456789abcdef"}, "machines"),
        (RECORDS[-1], {"sealed_key": base64.b64encode(b"x" * 4097).decode()}, "sealed_key"),
        (DEPLOYMENT, {"kind": "serving"}, "kind"),
        (DEPLOYMENT, {"dataset_offers": [OFFER2]}, "dataset_offers"),
        (DEPLOYMENT, {"adapter_offers": [OFFER]}, "adapter_offers"),
        (DEPLOYMENT, {"adapter_offers": [f"of-{i:016x}" for i in range(1, 10)]}, "adapter_offers"),
        (COMPLETED, {"adapter_offers": [OFFER]}, "adapter_offers"),
        (COMPLETED, {"manifest_digest": "sha256:short"}, "manifest_digest"),
        (COMPLETED, {"delivery_uri": ""}, "delivery_uri"),
        (CHECKPOINT, {"notice_uri": 3}, "notice_uri"),
        (ENDPOINT, {"url": "ftp://x"}, "url"),
        (ENDPOINT, {"url": "http://a b"}, "url"),
        (ENDPOINT, {"deployment_key": "07" * 33}, "deployment_key"),
        (ENDPOINT, {"key_signature": "09" * 32}, "key_signature"),
        (ENDPOINT, {"removed_at": -1}, "removed_at"),
        (DISPUTE, {"dispute_id": "or-0123456789abcdef"}, "dispute_id"),
        (DISPUTE, {"commitments": ["b25l"]}, "commitments"),
        (DISPUTE, {"commitments": ["b25l", "b25l="]}, "commitments"),
        (DISPUTE, {"slashed": [ADDR]}, "slashed"),
        (DISPUTE, {"output_digest": "sha256:"}, "output_digest"),
        (INFERENCE_RECORDS[7], {"user": MACHINE}, "user"),
        (INFERENCE_RECORDS[7], {"balance": -5}, "balance"),
        (INFERENCE_RECORDS[-1], {"request_digest": None}, "request_digest"),
    ],
)
def test_tampered_fields_are_named(record: JsonRecord, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedInput, match=field):
        type(record).from_json(_tampered(record, **changes))


def test_offer_shape_depends_on_kind() -> None:
    model, compute = RECORDS[6], RECORDS[7]
    with pytest.raises(MalformedInput, match="needs content_digest, blob_uri and size"):
        Offer.from_json(_tampered(model, blob_uri=None))
    with pytest.raises(MalformedInput, match="no machine_ids"):
        Offer.from_json(_tampered(model, machine_ids=[MACHINE]))
    with pytest.raises(MalformedInput, match="compute offer lists machine_ids"):
        Offer.from_json(_tampered(compute, machine_ids=[]))
    with pytest.raises(MalformedInput, match="compute offer lists machine_ids"):
        Offer.from_json(_tampered(compute, content_digest=DIGEST))
    with pytest.raises(MalformedInput, match="priced free, per_hour or fixed"):
        Offer.from_json(_tampered(compute, pricing={"model": REVENUE_SHARE, "amount": 0, "share_bps": 5}))


@pytest.mark.parametrize(
    ("model", "amount", "share_bps", "ok"),
    [
        (FREE, 0, 0, True),
        (FREE, 1, 0, False),
        (PER_HOUR, 1, 0, True),
        (PER_HOUR, 0, 0, False),
        (FIXED, 5, 0, True),
        (FIXED, 5, 1, False),
        (REVENUE_SHARE, 0, 1, True),
        (REVENUE_SHARE, 0, 10_000, True),
        (REVENUE_SHARE, 0, 10_001, False),
        (REVENUE_SHARE, 0, 0, False),
        (REVENUE_SHARE, 3, 100, False),
    ],
)
def test_pricing_must_fit_its_model(model: str, amount: int, share_bps: int, ok: bool) -> None:
    data = {"model": model, "amount": amount, "share_bps": share_bps}
    if ok:
        assert Pricing.from_json(data).to_json() == data
    else:
        with pytest.raises(MalformedInput, match="pricing"):
            Pricing.from_json(data)


def test_pricing_arithmetic() -> None:
    per_hour = Pricing(PER_HOUR, 3_600_000, 0)
    assert per_hour.deposit(lease_hours=4, replicas=2) == 28_800_000
    assert per_hour.charge(usage_seconds=5400) == 5_400_000
    assert Pricing(PER_HOUR, 7, 0).charge(usage_seconds=1000) == 1  # 7000 // 3600, floored
    assert Pricing(FIXED, 9, 0).deposit(100, 3) == 9 == Pricing(FIXED, 9, 0).charge(0)
    assert Pricing(FREE, 0, 0).deposit(5, 1) == 0 == Pricing(REVENUE_SHARE, 0, 500).charge(3600)


def test_ids_come_from_the_creating_transaction() -> None:
    tx_hash = "sha256:" + "0123456789abcdef" + "9" * 48
    assert derive_id("of-", tx_hash) == "of-0123456789abcdef"
    assert is_record_id("of-0123456789abcdef", "of-")
    assert not is_record_id("of-0123456789abcdef", "or-")
    assert not is_record_id("of-0123456789ABCDEF", "of-")
    assert not is_record_id("of-0123456789abcde", "of-")
    assert not is_record_id(7, "of-")


def test_order_lists_its_content_offers_in_grant_order() -> None:
    order = RECORDS[8]
    assert isinstance(order, Order)
    assert order.content_offers == (OFFER, OFFER2, OFFER)


def test_a_deployment_reads_its_adapters_before_its_engine() -> None:
    assert DEPLOYMENT.content_offers == (OFFER, OFFER2, OFFER)
    assert DISPUTE.to_json()["commitments"] == [base64.b64encode(b"one").decode(), base64.b64encode(b"two").decode()]


def test_deployment_terms_come_from_the_params() -> None:
    terms = DeploymentTerms.of({"price_per_1k_tokens": 5, "gateway": ADDR, "temperature": "0.7"})
    assert terms == DeploymentTerms(5, ADDR, None)
    assert DeploymentTerms.of({"price_per_1k_tokens": 0, "gateway": ADDR, "consensus": "single"}).consensus == "single"
    for bad in ({"gateway": ADDR}, {"price_per_1k_tokens": 1}, {"price_per_1k_tokens": -1, "gateway": ADDR}):
        with pytest.raises(MalformedInput, match="inference order params"):
            DeploymentTerms.of(bad)


def test_a_fine_tune_resumes_from_its_latest_released_checkpoint() -> None:
    older = Checkpoint(ORDER, "mc-1123456789abcdef", OFFER2, 2, 600, DIGEST, True, 5, None)
    running = Checkpoint(ORDER, "mc-2123456789abcdef", OFFER2, 9, 900, DIGEST, False, 5, None)
    seat = Checkpoint(ORDER, "mc-3123456789abcdef", OFFER2, 0, 0, None, True, 5, None)
    assert latest_released([older, CHECKPOINT, running, seat]) == CHECKPOINT
    assert latest_released([running, seat]) is None

"""Transaction payloads: every type round-trips, and malformed, truncated or tampered payloads are refused."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from cloister.consensus.commitment import MAX_COMMITMENT
from cloister.errors import InvalidTransaction
from cloister.ledger.records import (
    MAX_ADAPTERS,
    MAX_REASON,
    MAX_SEALED_KEY,
    MAX_TCB_EVIDENCE,
    Pricing,
    Restrictions,
)
from cloister.ledger.transactions import (
    MAX_PARAMS,
    PAYLOAD_TYPES,
    CancelOrder,
    ChallengeMachine,
    CompleteOrder,
    CreateOffer,
    CreateOrder,
    DepositCredit,
    DepositStake,
    FailOrder,
    FaucetDrip,
    Heartbeat,
    OpenDispute,
    Payload,
    PostGrant,
    PostResumeGrant,
    ReassignOrder,
    RecordCheckpoint,
    RefuseGrant,
    RegisterAccount,
    RegisterEndpoint,
    RegisterMachine,
    RegisterProvider,
    ReportTimeout,
    RetireMachine,
    RetireOffer,
    SettleUsage,
    StartOrder,
    StopDeployment,
    Transfer,
    WithdrawCredit,
    WithdrawStake,
    parse_payload,
)

ADDR = "cl" + "ab" * 20
DIGEST = "sha256:" + "0f" * 32
MACHINE = "mc-0123456789abcdef"
OFFER = "of-0123456789abcdef"
OFFER2 = "of-1123456789abcdef"
ORDER = "or-0123456789abcdef"
URI = "file:///blobs/ab/cd"
DEPLOYMENT = {"price_per_1k_tokens": 2000, "gateway": ADDR, "consensus": "sampling:3", "max_new_tokens": 64}

EXAMPLES: list[Payload] = [
    RegisterAccount("alice", b"\x02" * 32),
    FaucetDrip(5),
    Transfer(ADDR, 5),
    RegisterProvider("acme", "GPUs in Frankfurt"),
    DepositStake(1),
    WithdrawStake(1),
    ChallengeMachine(),
    RegisterMachine("eu-west", b"evidence"),
    Heartbeat(MACHINE),
    RetireMachine(MACHINE),
    CreateOffer(
        "dataset", "d", "", DIGEST, "s3://b/k", 10, Pricing("fixed", 3, 0), Restrictions(("sim",), (), (), 2), ()
    ),
    CreateOffer("compute", "box", "", None, None, None, Pricing("per_hour", 3, 0), Restrictions(), (MACHINE,)),
    RetireOffer(OFFER),
    CreateOrder("finetune", OFFER, (OFFER2,), OFFER, None, {"epochs": 1}, 2, 1, 100),
    PostGrant(ORDER, OFFER, MACHINE, b"sealed"),
    RefuseGrant(ORDER, OFFER, MACHINE, "debug TCB"),
    StartOrder(ORDER, MACHINE),
    CompleteOrder(ORDER, MACHINE, 3600, DIGEST, DIGEST, URI),
    RecordCheckpoint(ORDER, MACHINE, 3, 1800, DIGEST, URI),
    PostResumeGrant(ORDER, MACHINE, b"sealed checkpoint key"),
    ReassignOrder(ORDER, MACHINE),
    FailOrder(ORDER, MACHINE, "engine crashed", URI),
    CancelOrder(ORDER),
    RegisterEndpoint(ORDER, MACHINE, "http://127.0.0.1:8701", b"\x07" * 32, b"\x09" * 64),
    StopDeployment(ORDER),
    DepositCredit(ORDER, 5),
    WithdrawCredit(ORDER, 5),
    SettleUsage(ORDER, ADDR, 1200, DIGEST),
    OpenDispute(ORDER, DIGEST, (b"first commitment", b"second commitment")),
    ReportTimeout(ORDER, MACHINE, DIGEST),
]
INFERENCE = CreateOrder("inference", OFFER, (), OFFER, None, DEPLOYMENT, 2, 3, 100, (OFFER2,))


def test_every_type_has_an_example() -> None:
    assert {type(p) for p in EXAMPLES} == set(PAYLOAD_TYPES.values())


@pytest.mark.parametrize("payload", [*EXAMPLES, INFERENCE], ids=lambda p: p.TYPE)
def test_round_trip(payload: Payload) -> None:
    assert parse_payload(payload.TYPE, payload.to_payload()) == payload


@pytest.mark.parametrize("payload", [*EXAMPLES, INFERENCE], ids=lambda p: p.TYPE)
def test_truncated_extended_and_mistyped_payloads(payload: Payload) -> None:
    data = payload.to_payload()
    for name in data:
        with pytest.raises(InvalidTransaction, match=f"{payload.TYPE} payload .*missing {name}"):
            parse_payload(payload.TYPE, {k: v for k, v in data.items() if k != name})
        with pytest.raises(InvalidTransaction, match=name):
            parse_payload(payload.TYPE, {**data, name: [["wrong"]]})
    with pytest.raises(InvalidTransaction, match="unknown sneaky"):
        parse_payload(payload.TYPE, {**data, "sneaky": True})


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(InvalidTransaction, match=r"unknown transaction type 'mint'.*transfer"):
        parse_payload("mint", {})


def _bad(payload: Payload, **changes: Any) -> None:
    with pytest.raises(InvalidTransaction):
        parse_payload(payload.TYPE, {**payload.to_payload(), **changes})


def test_amounts_must_be_positive_integers() -> None:
    examples = (FaucetDrip(1), DepositStake(1), WithdrawStake(1), Transfer(ADDR, 1), DepositCredit(ORDER, 1))
    for example in (*examples, WithdrawCredit(ORDER, 1)):
        for amount in (0, -1, True, 1.5, "1", 1 << 63):
            _bad(example, amount=amount)


def test_addresses_ids_and_digests_are_checked() -> None:
    _bad(Transfer(ADDR, 1), to="cl" + "zz" * 20)
    _bad(Heartbeat(MACHINE), machine_id=OFFER)
    _bad(RetireOffer(OFFER), offer_id="of-short")
    complete = CompleteOrder(ORDER, MACHINE, 1, DIGEST, None, URI)
    assert parse_payload(complete.TYPE, complete.to_payload()) == complete
    _bad(complete, report_digest="sha1:" + "0" * 40)
    _bad(complete, manifest_digest="sha256:" + "0" * 63)
    _bad(complete, usage_seconds=-1)
    _bad(complete, delivery_uri="")
    _bad(complete, delivery_uri=None)
    _bad(complete, delivery_uri="u" * 2049)
    _bad(FailOrder(ORDER, MACHINE, "x", None), delivery_uri="")
    _bad(SettleUsage(ORDER, ADDR, 1, DIGEST), user=MACHINE)
    _bad(SettleUsage(ORDER, ADDR, 1, DIGEST), tokens=0)
    _bad(SettleUsage(ORDER, ADDR, 1, DIGEST), receipts_digest="sha256:" + "AB" * 32)
    _bad(ReportTimeout(ORDER, MACHINE, DIGEST), request_digest=None)
    _bad(StopDeployment(ORDER), order_id=OFFER)
    _bad(RegisterAccount("a", b"\x00" * 32), sealing_key="00" * 33)


def test_size_limits() -> None:
    machine = EXAMPLES[7]
    _bad(machine, tcb_evidence=base64.b64encode(b"x" * (MAX_TCB_EVIDENCE + 1)).decode())
    parse_payload(machine.TYPE, {**machine.to_payload(), "tcb_evidence": base64.b64encode(b"x" * 1000).decode()})
    grant = PostGrant(ORDER, OFFER, MACHINE, b"k")
    _bad(grant, sealed_key=base64.b64encode(b"x" * (MAX_SEALED_KEY + 1)).decode())
    _bad(RegisterProvider("a", ""), name="n" * 129)
    _bad(RegisterProvider("a", ""), description="d" * 4097)
    refusal = RefuseGrant(ORDER, OFFER, MACHINE, "no")
    _bad(refusal, reason="r" * (MAX_REASON + 1))
    _bad(refusal, reason="")
    assert parse_payload(refusal.TYPE, {**refusal.to_payload(), "reason": "é" * MAX_REASON}).reason == "é" * MAX_REASON
    checkpoint = RecordCheckpoint(ORDER, MACHINE, 1, 0, DIGEST, URI)
    _bad(checkpoint, notice_uri="")
    _bad(checkpoint, notice_uri="n" * 2049)
    resume = PostResumeGrant(ORDER, MACHINE, b"k")
    _bad(resume, sealed_key=base64.b64encode(b"x" * (MAX_SEALED_KEY + 1)).decode())
    _bad(resume, sealed_key="")
    _bad(checkpoint, step=0)
    _bad(checkpoint, usage_seconds=-1)
    _bad(checkpoint, checkpoint_digest=None)
    _bad(checkpoint, checkpoint_digest="sha256:" + "AB" * 32)
    _bad(ReassignOrder(ORDER, MACHINE), machine_id=ORDER)


def test_order_rules() -> None:
    order = CreateOrder("finetune", OFFER, (OFFER2,), OFFER, None, {}, 2, 1, 0)
    _bad(order, kind="inference")
    _bad(order, replicas=2)
    _bad(order, lease_hours=0)
    _bad(order, dataset_offers=[])
    _bad(order, dataset_offers=[OFFER2, OFFER2])
    _bad(order, compute_offer=MACHINE)
    _bad(order, params={"lr": 0.0002})  # floats have two spellings: hyper-parameters are strings or integers
    _bad(order, params={"blob": "x" * MAX_PARAMS})
    parse_payload(order.TYPE, {**order.to_payload(), "params": {"blob": "x" * (MAX_PARAMS - 20)}})


def test_deployment_order_rules() -> None:
    _bad(INFERENCE, dataset_offers=[OFFER2])
    _bad(INFERENCE, adapter_offers=[OFFER])  # the base model is not its own adapter
    _bad(INFERENCE, adapter_offers=[OFFER2, OFFER2])
    adapters = [f"of-{i:016x}" for i in range(1, MAX_ADAPTERS + 2)]
    _bad(INFERENCE, adapter_offers=adapters)
    parse_payload(INFERENCE.TYPE, {**INFERENCE.to_payload(), "adapter_offers": adapters[:MAX_ADAPTERS]})
    parse_payload(INFERENCE.TYPE, {**INFERENCE.to_payload(), "adapter_offers": []})
    _bad(INFERENCE, replicas=0)
    _bad(INFERENCE, replicas=65)
    for name in ("price_per_1k_tokens", "gateway"):
        _bad(INFERENCE, params={k: v for k, v in DEPLOYMENT.items() if k != name})
    for price in (-1, True, "2000", 1 << 63):
        _bad(INFERENCE, params={**DEPLOYMENT, "price_per_1k_tokens": price})
    _bad(INFERENCE, params={**DEPLOYMENT, "gateway": MACHINE})
    _bad(INFERENCE, params={**DEPLOYMENT, "consensus": 3})
    _bad(INFERENCE, params={**DEPLOYMENT, "consensus": "s" * 129})
    parse_payload(INFERENCE.TYPE, {**INFERENCE.to_payload(), "params": {**DEPLOYMENT, "consensus": None}})
    finetune = CreateOrder("finetune", OFFER, (OFFER2,), OFFER, None, {}, 2, 1, 0)
    _bad(finetune, adapter_offers=[OFFER])


def test_deployment_payload_rules() -> None:
    endpoint = EXAMPLES[-7]
    assert isinstance(endpoint, RegisterEndpoint)
    for url in ("ftp://host", "http://host with space", "127.0.0.1:80", "", "http://" + "h" * 2048):
        _bad(endpoint, url=url)
    _bad(endpoint, deployment_key="07" * 31)
    _bad(endpoint, key_signature="09" * 65)
    dispute = OpenDispute(ORDER, DIGEST, (b"a", b"b"))
    _bad(dispute, commitments=[base64.b64encode(b"a").decode()])  # a dispute needs two sides
    _bad(dispute, commitments=[base64.b64encode(b"a").decode(), "not base64!"])
    _bad(dispute, commitments=[base64.b64encode(b"a").decode(), ""])
    big = base64.b64encode(b"x" * (MAX_COMMITMENT + 1)).decode()
    _bad(dispute, commitments=[base64.b64encode(b"a").decode(), big])
    _bad(dispute, commitments=[base64.b64encode(b"%d" % i).decode() for i in range(65)])
    _bad(dispute, commitments="YQ==")


def test_offer_rules() -> None:
    dataset, compute = EXAMPLES[10], EXAMPLES[11]
    _bad(dataset, content_digest=None)
    _bad(dataset, machine_ids=[MACHINE])
    _bad(compute, machine_ids=[])
    _bad(compute, size=3)
    _bad(compute, pricing={"model": "revenue_share", "amount": 0, "share_bps": 10})
    _bad(dataset, pricing={"model": "free", "amount": 3, "share_bps": 0})
    _bad(dataset, restrictions={"platforms": [], "regions": [], "engine_digests": ["x"], "max_lease_hours": None})
    _bad(dataset, kind="weights")

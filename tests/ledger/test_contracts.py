"""Machines, offers, orders, grants and settlement, on every backend (the `ledger` fixture)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from tests.ledger.attested import challenged_nonce, registration

from cloister.attest.tcb import Tcb
from cloister.crypto.identity import Identity
from cloister.errors import (
    BadRequest,
    InsufficientFunds,
    InvalidState,
    InvalidTransaction,
    NoEligibleMachine,
    NotAuthorized,
    RecordExists,
    RecordNotFound,
    RestrictionViolated,
)
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.records import MachineSpecs, OfferKind, Pricing, Restrictions
from cloister.ledger.transactions import (
    CancelOrder,
    ChallengeMachine,
    CompleteOrder,
    CreateOffer,
    CreateOrder,
    FailOrder,
    Heartbeat,
    PostGrant,
    RegisterProvider,
    RetireMachine,
    RetireOffer,
    StartOrder,
)
from cloister.ledger.wallet import Wallet

FREE = Pricing("free", 0, 0)
SPECS = MachineSpecs(cpu_cores=8, memory_gib=32, gpus=("H100",), disk_gib=500)
REPORT = "sha256:" + "5e" * 32
MANIFEST = "sha256:" + "3a" * 32
DELIVERY = "file:///blobs/delivery"
_serial = itertools.count()


def attrs(receipt: TxReceipt, kind: str) -> dict[str, Any]:
    found = [event.attrs for event in receipt.events if event.kind == kind]
    assert len(found) == 1, f"expected one {kind} event in {[e.kind for e in receipt.events]}"
    return found[0]


class Market:
    """Builds providers, machines and offers on a ledger, and remembers who owns which offer."""

    def __init__(self, ledger: Ledger, make_wallet: Callable[..., Wallet]) -> None:
        self.ledger = ledger
        self.make_wallet = make_wallet
        self.owners: dict[str, Wallet] = {}
        self.provider = self.new_provider("acme")
        self.developer = make_wallet("developer")

    def new_provider(self, name: str) -> Wallet:
        wallet = self.make_wallet(name)
        wallet.send(RegisterProvider(name, "machines for rent"))
        return wallet

    def challenge(self, provider: Wallet | None = None) -> bytes:
        receipt = (provider or self.provider).send(ChallengeMachine())
        return challenged_nonce([(event.kind, event.attrs) for event in receipt.events])

    def machine(self, provider: Wallet | None = None, region: str = "eu-west", **tcb: Any) -> str:
        """Register a machine with a sim TCB answering a fresh challenge; returns its id."""
        register = registration(self.challenge(provider), SPECS, region, **tcb)
        return str(attrs((provider or self.provider).send(register), "machine.registered")["machine_id"])

    def compute(
        self,
        *machine_ids: str,
        pricing: Pricing = FREE,
        restrictions: Restrictions | None = None,
        provider: Wallet | None = None,
    ) -> str:
        offer = CreateOffer(
            "compute", "box", "", None, None, None, pricing, restrictions or Restrictions(), machine_ids
        )
        return self._offer(provider or self.provider, offer)

    def content(
        self,
        kind: OfferKind,
        pricing: Pricing = FREE,
        restrictions: Restrictions | None = None,
        owner: Wallet | None = None,
    ) -> str:
        digest = "sha256:" + hashlib.sha256(b"%s %d" % (kind.encode(), next(_serial))).hexdigest()
        offer = CreateOffer(kind, kind, "", digest, "file:///blob", 123, pricing, restrictions or Restrictions(), ())
        return self._offer(owner or self.make_wallet(f"{kind} owner"), offer)

    def _offer(self, owner: Wallet, offer: CreateOffer) -> str:
        offer_id = str(attrs(owner.send(offer), "offer.created")["offer_id"])
        self.owners[offer_id] = owner
        return offer_id

    def basic(self, **restrictions: Restrictions) -> tuple[str, str, str]:
        """A free model, dataset and engine (with optional restrictions by kind), and one live machine."""
        machine = self.machine()
        self.compute(machine)
        return (
            self.content("model", restrictions=restrictions.get("model")),
            self.content("dataset", restrictions=restrictions.get("dataset")),
            self.content("engine"),
        )

    def order(
        self,
        model: str,
        datasets: tuple[str, ...],
        engine: str,
        *,
        compute: str | None = None,
        lease_hours: int = 1,
        deposit: int = 0,
        by: Wallet | None = None,
    ) -> tuple[str, TxReceipt]:
        payload = CreateOrder("finetune", model, datasets, engine, compute, {"epochs": 1}, lease_hours, 1, deposit)
        receipt = (by or self.developer).send(payload)
        return str(attrs(receipt, "order.created")["order_id"]), receipt

    def grant_all(self, order_id: str) -> list[TxReceipt]:
        order = self.ledger.order(order_id)
        return [
            self.owners[offer_id].send(PostGrant(order_id, offer_id, machine_id, b"sealed " + offer_id.encode()))
            for offer_id in order.content_offers
            for machine_id in order.machines
        ]

    def running(self, order_id: str) -> str:
        """Grant every key and start the order on its machine; returns the machine id."""
        self.grant_all(order_id)
        machine_id = self.ledger.order(order_id).machines[0]
        self.provider.send(StartOrder(order_id, machine_id))
        return machine_id


@pytest.fixture
def market(ledger: Ledger, make_wallet: Callable[..., Wallet]) -> Market:
    return Market(ledger, make_wallet)


# --- machines ------------------------------------------------------------------------------------------------


def test_machine_registration_and_heartbeat(market: Market, ledger: Ledger, clock: Any) -> None:
    loader = Identity.generate().public
    receipt = market.provider.send(registration(market.challenge(), SPECS, "us-east", loader=loader, gpu=True))
    registered = attrs(receipt, "machine.registered")
    machine = ledger.machine(registered["machine_id"])
    assert machine.machine_id.startswith("mc-") and machine.provider == market.provider.address
    assert (machine.platform, machine.region, machine.specs) == ("sim", "us-east", SPECS)
    assert (machine.loader_signing_key, machine.loader_sealing_key) == (loader.signing_key, loader.sealing_key)
    tcb = Tcb.from_bytes(machine.tcb_evidence)
    assert tcb.loader == loader and tcb.gpu is not None
    assert (machine.attestation_verdict, registered["verdict"]) == ("simulated", "simulated")
    assert registered["attestation"] == machine.attestation_digest
    assert machine.registered_at == machine.last_heartbeat == clock.now and machine.active
    clock.advance(30)
    market.provider.send(Heartbeat(machine.machine_id))
    assert ledger.machine(machine.machine_id).last_heartbeat == clock.now
    assert ledger.machines(provider=market.provider.address) == [ledger.machine(machine.machine_id)]
    assert ledger.machines(provider=market.developer.address) == []


def test_only_providers_challenge_register_and_tend_their_machines(market: Market, ledger: Ledger) -> None:
    with pytest.raises(NotAuthorized, match=r"provider\.register first"):
        market.developer.send(ChallengeMachine())
    with pytest.raises(NotAuthorized, match=r"provider\.register first"):
        market.developer.send(registration(bytes(32), SPECS))
    machine_id = market.machine()
    rival = market.new_provider("rival")
    with pytest.raises(NotAuthorized, match="belongs to provider"):
        rival.send(Heartbeat(machine_id))
    with pytest.raises(NotAuthorized):
        rival.send(RetireMachine(machine_id))
    with pytest.raises(RecordNotFound):
        market.provider.send(Heartbeat("mc-0000000000000000"))
    with pytest.raises(RecordNotFound):
        ledger.machine("mc-0000000000000000")


def test_retire_machine(market: Market, ledger: Ledger) -> None:
    machine_id = market.machine()
    receipt = market.provider.send(RetireMachine(machine_id))
    assert attrs(receipt, "machine.retired")["machine_id"] == machine_id
    assert not ledger.machine(machine_id).active
    with pytest.raises(InvalidState, match="retired"):
        market.provider.send(Heartbeat(machine_id))
    with pytest.raises(InvalidState):
        market.provider.send(RetireMachine(machine_id))


def test_a_working_machine_cannot_retire(market: Market) -> None:
    order_id, _ = market.order(*_first(market.basic()))
    machine_id = market.running(order_id)
    with pytest.raises(InvalidState, match="finish or fail that order"):
        market.provider.send(RetireMachine(machine_id))
    market.provider.send(CompleteOrder(order_id, machine_id, 60, REPORT, MANIFEST, DELIVERY))
    market.provider.send(RetireMachine(machine_id))


def _first(offers: tuple[str, str, str]) -> tuple[str, tuple[str, ...], str]:
    model, dataset, engine = offers
    return model, (dataset,), engine


# --- offers --------------------------------------------------------------------------------------------------


def test_content_offer_is_recorded(market: Market, ledger: Ledger, clock: Any) -> None:
    limits = Restrictions(("sim",), ("eu-west",), ("sha256:" + "ee" * 32,), 8)
    offer_id = market.content("model", Pricing("per_hour", 2_000_000, 0), limits)
    offer = ledger.offer(offer_id)
    assert offer.offer_id.startswith("of-") and offer.owner == market.owners[offer_id].address
    assert (offer.kind, offer.pricing, offer.restrictions, offer.size) == (
        "model",
        Pricing("per_hour", 2_000_000, 0),
        limits,
        123,
    )
    assert offer.created_at == clock.now and offer.active and offer.machine_ids == ()


def test_compute_offers_cover_only_the_senders_live_machines(market: Market) -> None:
    rival = market.new_provider("rival")
    theirs = market.machine(provider=rival)
    with pytest.raises(NotAuthorized):
        market.compute(market.machine(), theirs)
    with pytest.raises(RecordNotFound):
        market.compute("mc-0000000000000000")
    retired = market.machine()
    market.provider.send(RetireMachine(retired))
    with pytest.raises(InvalidState):
        market.compute(retired)


def test_offer_filters_and_retirement(market: Market, ledger: Ledger) -> None:
    model = market.content("model")
    dataset = market.content("dataset")
    compute = market.compute(market.machine())
    digest = ledger.offer(model).content_digest
    assert [o.offer_id for o in ledger.offers(kind="model")] == [model]
    assert [o.offer_id for o in ledger.offers(owner=market.owners[dataset].address)] == [dataset]
    assert [o.offer_id for o in ledger.offers(content_digest=digest)] == [model]
    assert {o.offer_id for o in ledger.offers()} == {model, dataset, compute}
    with pytest.raises(NotAuthorized, match="only its owner"):
        market.developer.send(RetireOffer(model))
    market.owners[model].send(RetireOffer(model))
    assert ledger.offers(kind="model") == []
    assert [o.offer_id for o in ledger.offers(kind="model", include_retired=True)] == [model]
    with pytest.raises(InvalidState, match="already retired"):
        market.owners[model].send(RetireOffer(model))
    with pytest.raises(BadRequest, match="one of model"):
        ledger.offers(kind="weights")
    with pytest.raises(RecordNotFound):
        ledger.offer("of-0000000000000000")


# --- orders: the full lifecycle and settlement ---------------------------------------------------------------

HOUR = 3600


@pytest.fixture
def priced(market: Market) -> dict[str, str]:
    """Every pricing model at once: compute 3/h, model 2/h, dataset 0.5 fixed, a free dataset, engine 10% share."""
    machine = market.machine()
    return {
        "machine": machine,
        "compute": market.compute(machine, pricing=Pricing("per_hour", 3_000_000, 0)),
        "model": market.content("model", Pricing("per_hour", 2_000_000, 0)),
        "dataset": market.content("dataset", Pricing("fixed", 500_000, 0)),
        "free": market.content("dataset"),
        "engine": market.content("engine", Pricing("revenue_share", 0, 1000)),
    }


def _priced_order(market: Market, priced: dict[str, str], deposit: int) -> tuple[str, TxReceipt]:
    datasets = (priced["dataset"], priced["free"])
    return market.order(priced["model"], datasets, priced["engine"], lease_hours=4, deposit=deposit)


def _balances(market: Market, priced: dict[str, str]) -> dict[str, int]:
    wallets = {kind: market.owners[priced[kind]] for kind in ("model", "dataset", "free", "engine", "compute")}
    wallets["developer"] = market.developer
    return {kind: market.ledger.account(wallet.address).balance for kind, wallet in wallets.items()}


def test_full_lifecycle_settles_exactly(market: Market, priced: dict[str, str], ledger: Ledger, clock: Any) -> None:
    before = _balances(market, priced)
    order_id, receipt = _priced_order(market, priced, deposit=25_000_000)
    # required = model 2/h * 4h + dataset 0.5 fixed + free 0 + engine share 0 + compute 3/h * 4h
    assert attrs(receipt, "order.created")["required"] == 20_500_000
    assigned = attrs(receipt, "order.assigned")
    assert assigned == {"order_id": order_id, "machines": [priced["machine"]], "compute_offer": priced["compute"]}
    order = ledger.order(order_id)
    assert (order.state, order.escrow, order.machines, order.compute_offer) == (
        "pending_grants",
        25_000_000,
        (priced["machine"],),
        priced["compute"],
    )
    assert ledger.account(market.developer.address).balance == before["developer"] - 25_000_000

    grants = market.grant_all(order_id)
    assert [r.events[-1].kind for r in grants] == ["grant.posted"] * 3 + ["order.ready"]
    assert ledger.order(order_id).state == "ready"
    stored = ledger.grants(order_id)
    assert {(g.offer_id, g.sealed_key) for g in stored} == {
        (offer_id, b"sealed " + offer_id.encode()) for offer_id in order.content_offers
    }
    assert {g.owner for g in stored} == {market.owners[o].address for o in order.content_offers}

    market.provider.send(StartOrder(order_id, priced["machine"]))
    assert (ledger.order(order_id).state, ledger.order(order_id).started_at) == ("running", clock.now)
    clock.advance(5400)
    receipt = market.provider.send(CompleteOrder(order_id, priced["machine"], 5400, REPORT, MANIFEST, DELIVERY))
    payments = {e.attrs["reason"].split()[0]: e.attrs["amount"] for e in receipt.events if e.kind == "payment"}
    assert payments == {"model": 3_000_000, "dataset": 500_000, "compute": 4_500_000}
    assert attrs(receipt, "refund")["amount"] == 17_000_000

    after = _balances(market, priced)
    assert {kind: after[kind] - before[kind] for kind in after} == {
        "model": 3_000_000,
        "dataset": 500_000,
        "free": 0,
        "engine": 0,
        "compute": 4_500_000,
        "developer": -8_000_000,
    }
    done = ledger.order(order_id)
    assert (done.state, done.escrow, done.usage_seconds, done.report_digest, done.ended_at) == (
        "completed",
        0,
        5400,
        REPORT,
        clock.now,
    )


def test_usage_is_capped_at_the_lease(market: Market, priced: dict[str, str]) -> None:
    before = _balances(market, priced)
    order_id, _ = _priced_order(market, priced, deposit=25_000_000)
    machine = market.running(order_id)
    receipt = market.provider.send(CompleteOrder(order_id, machine, 10 * 4 * HOUR, REPORT, MANIFEST, DELIVERY))
    assert attrs(receipt, "order.completed")["usage_seconds"] == 4 * HOUR
    assert attrs(receipt, "refund")["amount"] == 25_000_000 - 20_500_000
    after = _balances(market, priced)
    assert (after["model"] - before["model"], after["compute"] - before["compute"]) == (8_000_000, 12_000_000)


def test_per_hour_prices_are_pro_rated_by_the_second_rounding_down(market: Market, priced: dict[str, str]) -> None:
    order_id, _ = _priced_order(market, priced, deposit=20_500_000)
    machine = market.running(order_id)
    receipt = market.provider.send(CompleteOrder(order_id, machine, 1, REPORT, MANIFEST, DELIVERY))
    payments = {e.attrs["reason"].split()[0]: e.attrs["amount"] for e in receipt.events if e.kind == "payment"}
    assert payments == {"model": 555, "dataset": 500_000, "compute": 833}
    assert attrs(receipt, "refund")["amount"] == 20_500_000 - 500_000 - 555 - 833


def test_deposit_must_cover_the_worst_case(market: Market, priced: dict[str, str], ledger: Ledger) -> None:
    with pytest.raises(InsufficientFunds, match="at least 20500000 units"):
        _priced_order(market, priced, deposit=20_499_999)
    poor = market.make_wallet("poor", funds=20_000_000)
    with pytest.raises(InsufficientFunds, match="holds 20000000"):
        market.order(
            priced["model"], (priced["dataset"],), priced["engine"], lease_hours=4, deposit=20_500_000, by=poor
        )
    assert ledger.orders() == []
    assert ledger.account(poor.address).balance == 20_000_000


def test_fail_refunds_everything(market: Market, priced: dict[str, str], ledger: Ledger) -> None:
    before = ledger.account(market.developer.address).balance
    order_id, _ = _priced_order(market, priced, deposit=21_000_000)
    machine = market.running(order_id)
    receipt = market.provider.send(FailOrder(order_id, machine, "engine ran out of memory", None))
    assert attrs(receipt, "refund") == {"order_id": order_id, "to": market.developer.address, "amount": 21_000_000}
    order = ledger.order(order_id)
    assert (order.state, order.escrow, order.failure_reason) == ("failed", 0, "engine ran out of memory")
    assert ledger.account(market.developer.address).balance == before
    with pytest.raises(InvalidState, match="is failed"):
        market.provider.send(FailOrder(order_id, machine, "again", None))
    with pytest.raises(InvalidState):
        market.provider.send(CompleteOrder(order_id, machine, 1, REPORT, MANIFEST, DELIVERY))


@pytest.mark.parametrize("granted", [False, True])
def test_owner_cancels_before_start(market: Market, priced: dict[str, str], ledger: Ledger, granted: bool) -> None:
    before = ledger.account(market.developer.address).balance
    order_id, _ = _priced_order(market, priced, deposit=21_000_000)
    if granted:
        market.grant_all(order_id)
    with pytest.raises(NotAuthorized, match="only its owner"):
        market.provider.send(CancelOrder(order_id))
    receipt = market.developer.send(CancelOrder(order_id))
    assert attrs(receipt, "refund")["amount"] == 21_000_000
    assert ledger.order(order_id).state == "cancelled"
    assert ledger.account(market.developer.address).balance == before
    with pytest.raises(InvalidState):
        market.developer.send(CancelOrder(order_id))


def test_a_running_order_cannot_be_cancelled(market: Market) -> None:
    order_id, _ = market.order(*_first(market.basic()))
    market.running(order_id)
    with pytest.raises(InvalidState, match="pending_grants or ready"):
        market.developer.send(CancelOrder(order_id))


def test_only_the_assigned_provider_reports_and_only_in_order(market: Market) -> None:
    order_id, _ = market.order(*_first(market.basic()))
    machine = market.ledger.order(order_id).machines[0]
    with pytest.raises(InvalidState, match="when ready"):
        market.provider.send(StartOrder(order_id, machine))
    other_machine = market.machine()
    with pytest.raises(NotAuthorized, match="not assigned"):
        market.provider.send(StartOrder(order_id, other_machine))
    market.grant_all(order_id)
    rival = market.new_provider("rival")
    with pytest.raises(NotAuthorized, match="belongs to provider"):
        rival.send(StartOrder(order_id, machine))
    with pytest.raises(InvalidState, match="when running"):
        market.provider.send(CompleteOrder(order_id, machine, 1, REPORT, MANIFEST, DELIVERY))
    market.provider.send(StartOrder(order_id, machine))
    with pytest.raises(InvalidState):
        market.provider.send(StartOrder(order_id, machine))
    with pytest.raises(NotAuthorized):
        rival.send(CompleteOrder(order_id, machine, 1, REPORT, MANIFEST, DELIVERY))
    with pytest.raises(NotAuthorized):
        rival.send(FailOrder(order_id, machine, "sabotage", None))
    with pytest.raises(RecordNotFound):
        market.provider.send(StartOrder("or-0000000000000000", machine))


# --- grants --------------------------------------------------------------------------------------------------


def test_grant_rules(market: Market, ledger: Ledger) -> None:
    model, dataset, engine = market.basic()
    order_id, _ = market.order(model, (dataset,), engine)
    machine = ledger.order(order_id).machines[0]
    stranger_offer = market.content("dataset")
    with pytest.raises(NotAuthorized, match="only its owner"):
        market.owners[dataset].send(PostGrant(order_id, model, machine, b"k"))
    with pytest.raises(NotAuthorized, match="not part of order"):
        market.owners[stranger_offer].send(PostGrant(order_id, stranger_offer, machine, b"k"))
    with pytest.raises(NotAuthorized, match="not assigned"):
        market.owners[model].send(PostGrant(order_id, model, market.machine(), b"k"))
    with pytest.raises(RecordNotFound):
        market.owners[model].send(PostGrant("or-0000000000000000", model, machine, b"k"))
    market.owners[model].send(PostGrant(order_id, model, machine, b"k"))
    with pytest.raises(RecordExists):
        market.owners[model].send(PostGrant(order_id, model, machine, b"k2"))
    assert ledger.order(order_id).state == "pending_grants"
    market.owners[dataset].send(PostGrant(order_id, dataset, machine, b"k"))
    receipt = market.owners[engine].send(PostGrant(order_id, engine, machine, b"k"))
    assert attrs(receipt, "order.ready") == {"order_id": order_id, "machines": [machine]}
    market.developer.send(CancelOrder(order_id))
    with pytest.raises(InvalidState):
        market.owners[engine].send(PostGrant(order_id, engine, machine, b"k2"))
    with pytest.raises(RecordNotFound):
        ledger.grants("or-0000000000000000")


# --- orders: offers, restrictions and eligibility ------------------------------------------------------------


def test_offers_must_exist_be_active_and_of_the_right_kind(market: Market) -> None:
    model, dataset, engine = market.basic()
    with pytest.raises(RecordNotFound):
        market.order("of-0000000000000000", (dataset,), engine)
    with pytest.raises(InvalidTransaction, match="is a dataset offer, not a model offer"):
        market.order(dataset, (dataset,), engine)
    with pytest.raises(InvalidTransaction, match="not a engine offer"):
        market.order(model, (dataset,), model)
    market.owners[dataset].send(RetireOffer(dataset))
    with pytest.raises(InvalidState, match="retired"):
        market.order(model, (dataset,), engine)


def test_engine_restriction_names_the_offer(market: Market) -> None:
    allowed = Restrictions(engine_digests=("sha256:" + "aa" * 32,))
    model, dataset, engine = market.basic(model=allowed)
    with pytest.raises(RestrictionViolated, match=f"model offer {model} .* lets only engines sha256:aaaa") as info:
        market.order(model, (dataset,), engine)
    assert info.value.details == {"offer_id": model, "restriction": "engine_digests"}
    digest = market.ledger.offer(engine).content_digest
    assert digest is not None
    welcome = market.content("dataset", restrictions=Restrictions(engine_digests=(digest,)))
    market.order(market.content("model"), (welcome,), engine)


def test_lease_restriction_names_the_offer(market: Market) -> None:
    model, dataset, engine = market.basic(dataset=Restrictions(max_lease_hours=2))
    with pytest.raises(RestrictionViolated, match=f"dataset offer {dataset} .* at most 2 hours, not 3"):
        market.order(model, (dataset,), engine, lease_hours=3)
    market.order(model, (dataset,), engine, lease_hours=2)


def test_named_compute_offer_restrictions_apply(market: Market) -> None:
    model, dataset, engine = market.basic()
    short = market.compute(market.machine(), restrictions=Restrictions(max_lease_hours=1))
    with pytest.raises(RestrictionViolated, match=f"compute offer {short}"):
        market.order(model, (dataset,), engine, compute=short, lease_hours=2)


def test_platform_restrictions_filter_machines(market: Market) -> None:
    model, dataset, engine = market.basic(model=Restrictions(platforms=("snp", "tdx")))
    with pytest.raises(NoEligibleMachine, match=f"1 platform not allowed by offer {model}"):
        market.order(model, (dataset,), engine)
    sim_model = market.content("model", restrictions=Restrictions(platforms=("sim", "snp")))
    _, receipt = market.order(sim_model, (dataset,), engine)
    assert attrs(receipt, "order.assigned")["machines"] == [market.ledger.machines()[0].machine_id]


def test_region_restrictions_filter_machines(market: Market) -> None:
    model, dataset, engine = market.basic(model=Restrictions(regions=("us-east",)))
    with pytest.raises(NoEligibleMachine, match=f"1 region not allowed by offer {model}"):
        market.order(model, (dataset,), engine)
    fitting = market.machine(region="us-east")
    market.compute(fitting)
    _, receipt = market.order(model, (dataset,), engine)
    assert attrs(receipt, "order.assigned")["machines"] == [fitting]


def test_compute_offer_placement_restrictions_filter_machines(market: Market) -> None:
    model, dataset, engine = market.content("model"), market.content("dataset"), market.content("engine")
    market.compute(market.machine(region="eu-west"), restrictions=Restrictions(regions=("eu-north",)))
    with pytest.raises(NoEligibleMachine, match="region not allowed"):
        market.order(model, (dataset,), engine)


def test_no_machines_at_all(market: Market) -> None:
    model, dataset, engine = market.content("model"), market.content("dataset"), market.content("engine")
    with pytest.raises(NoEligibleMachine, match="no machines are registered"):
        market.order(model, (dataset,), engine)


def test_machines_outside_active_compute_offers_are_not_eligible(market: Market) -> None:
    model, dataset, engine = market.content("model"), market.content("dataset"), market.content("engine")
    machine = market.machine()
    with pytest.raises(NoEligibleMachine, match="1 not in an active compute offer"):
        market.order(model, (dataset,), engine)
    compute = market.compute(machine)
    market.provider.send(RetireOffer(compute))
    with pytest.raises(NoEligibleMachine, match="not in an active compute offer"):
        market.order(model, (dataset,), engine)


def test_silent_machines_are_not_eligible_until_they_heartbeat(market: Market, clock: Any) -> None:
    model, dataset, engine = market.basic()
    machine = market.ledger.machines()[0].machine_id
    clock.advance(121)
    with pytest.raises(NoEligibleMachine, match="no heartbeat for over 120s"):
        market.order(model, (dataset,), engine)
    market.provider.send(Heartbeat(machine))
    market.order(model, (dataset,), engine)


def test_busy_and_retired_machines_are_not_eligible(market: Market, ledger: Ledger) -> None:
    model, dataset, engine = market.basic()
    first, _ = market.order(model, (dataset,), engine)
    with pytest.raises(NoEligibleMachine, match="1 busy with another order"):
        market.order(model, (dataset,), engine)
    market.developer.send(CancelOrder(first))
    second, _ = market.order(model, (dataset,), engine)
    market.developer.send(CancelOrder(second))
    market.provider.send(RetireMachine(ledger.order(second).machines[0]))
    with pytest.raises(NoEligibleMachine, match="1 retired"):
        market.order(model, (dataset,), engine)


def test_a_named_compute_offer_picks_from_its_machines(market: Market, ledger: Ledger) -> None:
    model, dataset, engine = market.basic()
    rival = market.new_provider("rival")
    theirs = market.machine(provider=rival)
    offer = market.compute(theirs, pricing=Pricing("fixed", 7, 0), provider=rival)
    with pytest.raises(InsufficientFunds, match="at least 7 units"):
        market.order(model, (dataset,), engine, compute=offer)
    order_id, receipt = market.order(model, (dataset,), engine, compute=offer, deposit=7)
    assert attrs(receipt, "order.assigned")["machines"] == [theirs]
    assert ledger.order(order_id).compute_offer == offer
    with pytest.raises(InvalidTransaction, match="not a compute offer"):
        market.order(model, (dataset,), engine, compute=model)


def test_order_queries(market: Market, ledger: Ledger) -> None:
    model, dataset, engine = market.basic()
    machine = ledger.machines()[0].machine_id
    first, _ = market.order(model, (dataset,), engine)
    market.developer.send(CancelOrder(first))
    other = market.make_wallet("other developer")
    second, _ = market.order(model, (dataset,), engine, by=other)
    assert [o.order_id for o in ledger.orders(owner=other.address)] == [second]
    assert {o.order_id for o in ledger.orders(machine_id=machine)} == {first, second}
    assert [o.order_id for o in ledger.orders(state="cancelled")] == [first]
    assert ledger.orders(state="running") == []
    with pytest.raises(BadRequest, match="unknown state"):
        ledger.orders(state="paused")

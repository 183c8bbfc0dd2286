"""Which machines an order runs on: every restriction checked, then a deterministic draw from ledger entropy.

Anyone can recompute an assignment from the ledger: the candidates are sorted by machine id and the draw is
seeded by ``sha256(randomness || order_id)``, where ``randomness`` is the previous block hash. A deployment's
replicas may come from different compute offers (each keeps its own), and their providers must hold the serving
stake that disputes and timeouts slash.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cloister.errors import NoEligibleMachine, RestrictionViolated
from cloister.ledger.contracts.call import Call
from cloister.ledger.records import COMPUTE, INFERENCE, OPEN_ORDER_STATES, Machine, Offer, OrderKind


@dataclass(frozen=True)
class Candidate:
    """An eligible machine and the compute offer it would run the order under."""

    machine: Machine
    offer: Offer


def check_terms(offer: Offer, engine_digest: str, lease_hours: int) -> None:
    """Raise :class:`RestrictionViolated` naming the offer unless it allows this engine and lease length."""
    limits = offer.restrictions
    if limits.engine_digests and engine_digest not in limits.engine_digests:
        raise RestrictionViolated(
            f"{offer.kind} offer {offer.offer_id} ({offer.name}) lets only engines "
            f"{', '.join(limits.engine_digests)} read it, not {engine_digest}; choose one of those engines",
            offer_id=offer.offer_id,
            restriction="engine_digests",
        )
    if limits.max_lease_hours is not None and lease_hours > limits.max_lease_hours:
        raise RestrictionViolated(
            f"{offer.kind} offer {offer.offer_id} ({offer.name}) allows leases of at most "
            f"{limits.max_lease_hours} hours, not {lease_hours}; ask for a shorter lease",
            offer_id=offer.offer_id,
            restriction="max_lease_hours",
        )


def _placement_refusal(offer: Offer, machine: Machine) -> str | None:
    """Why ``offer`` forbids running on ``machine`` (platform or region), or ``None`` if it allows it."""
    limits = offer.restrictions
    if limits.platforms and machine.platform not in limits.platforms:
        return f"platform not allowed by offer {offer.offer_id}"
    if limits.regions and machine.region not in limits.regions:
        return f"region not allowed by offer {offer.offer_id}"
    return None


def min_stake(call: Call, kind: OrderKind) -> int:
    """The stake a provider needs for its machines to take an order of ``kind``."""
    params = call.params
    if kind == INFERENCE:
        return max(params.min_provider_stake, params.min_serving_stake)
    return params.min_provider_stake


class _Eligibility:
    """Sorts every registered machine into eligible candidates and counted reasons for refusal."""

    def __init__(
        self,
        call: Call,
        kind: OrderKind,
        content: Sequence[Offer],
        computes: Sequence[Offer],
        tried: Collection[str] = (),
    ) -> None:
        self.call = call
        self.min_stake = min_stake(call, kind)
        self.content = content
        self.computes = computes
        self.tried = tried
        self.busy = {m for o in call.read.orders() if o.state in OPEN_ORDER_STATES for m in o.machines}
        self.refusals: Counter[str] = Counter()

    def candidates(self) -> list[Candidate]:
        found = []
        for machine in self.call.read.machines():
            verdict = self._judge(machine)
            if isinstance(verdict, Candidate):
                found.append(verdict)
            else:
                self.refusals[verdict] += 1
        return found

    def _judge(self, machine: Machine) -> Candidate | str:
        """The machine as a candidate, or why it is not one."""
        params = self.call.params
        if not machine.active:
            return "retired"
        if machine.machine_id in self.tried:
            return "already tried for this order"
        if self.call.now - machine.last_heartbeat > params.heartbeat_timeout:
            return f"no heartbeat for over {params.heartbeat_timeout}s"
        if machine.machine_id in self.busy:
            return "busy with another order"
        if self.call.read.account(machine.provider).stake < self.min_stake:
            return f"provider stake below {self.min_stake}"
        for offer in self.content:
            refusal = _placement_refusal(offer, machine)
            if refusal:
                return refusal
        covering = [o for o in self.computes if machine.machine_id in o.machine_ids]
        if not covering:
            return "not in an active compute offer that accepts the order"
        refusals = [_placement_refusal(offer, machine) for offer in covering]
        for offer, refusal in zip(covering, refusals, strict=True):
            if refusal is None:
                return Candidate(machine, offer)
        return str(refusals[0])


def draw(
    randomness: bytes, order_id: str, candidates: Sequence[Candidate], count: int, *, one_offer: bool = True
) -> list[Candidate]:
    """Pick ``count`` candidates without replacement: draw ``i`` takes ``sha256(seed || i) mod remaining``.

    ``i`` is 4 big-endian bytes. With ``one_offer`` (fine-tunes), picks after the first share its compute offer:
    one order, one compute price.
    """
    seed = hashlib.sha256(randomness + order_id.encode()).digest()
    remaining = list(candidates)
    picked: list[Candidate] = []
    for i in range(count):
        if not remaining:
            break
        draw_hash = hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
        picked.append(remaining.pop(int.from_bytes(draw_hash, "big") % len(remaining)))
        if one_offer:
            remaining = [c for c in remaining if c.offer.offer_id == picked[0].offer.offer_id]
    return picked


def _accepting(call: Call, engine_digest: str, lease_hours: int) -> list[Offer]:
    """Every active compute offer whose terms accept the engine and the lease."""
    computes = []
    for offer in call.read.offers(kind=COMPUTE):
        try:
            check_terms(offer, engine_digest, lease_hours)
        except RestrictionViolated:
            continue
        computes.append(offer)
    return computes


def assign(
    call: Call,
    order_id: str,
    kind: OrderKind,
    content: Sequence[Offer],
    compute: Offer | None,
    *,
    lease_hours: int,
    replicas: int,
) -> list[Candidate]:
    """The machines (and their compute offers) an order gets, or :class:`NoEligibleMachine` saying why none fit.

    ``content`` (engine last) and a named ``compute`` offer have passed :func:`check_terms`; without a named
    one, every active compute offer whose terms accept the order is considered.
    """
    engine_digest = content[-1].content_digest or ""
    computes = [compute] if compute is not None else _accepting(call, engine_digest, lease_hours)
    eligibility = _Eligibility(call, kind, content, computes)
    candidates = eligibility.candidates()
    picked = draw(call.ctx.randomness, order_id, candidates, replicas, one_offer=kind != INFERENCE)
    if len(picked) < replicas:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(eligibility.refusals.items()))
        raise NoEligibleMachine(
            f"the order needs {replicas} machine(s) but {len(picked)} qualify"
            + (f" (of the others: {reasons})" if reasons else " (no machines are registered)")
            + "; wait for a machine to free up or come back, or relax the order's restrictions",
            refusals=dict(eligibility.refusals),
        )
    return picked


def reassign(
    call: Call,
    order_id: str,
    kind: OrderKind,
    content: Sequence[Offer],
    current: Offer,
    tried: Collection[str],
    lease_hours: int,
) -> Candidate | None:
    """The machine that takes a seat of an order over, or ``None``: the draw of :func:`assign` over machines not
    yet tried, under compute offers priced like ``current`` at no more, so the escrow still covers the order."""
    engine_digest = content[-1].content_digest or ""
    computes = [
        offer
        for offer in _accepting(call, engine_digest, lease_hours)
        if offer.pricing.model == current.pricing.model and offer.pricing.amount <= current.pricing.amount
    ]
    candidates = _Eligibility(call, kind, content, computes, tried).candidates()
    picked = draw(call.ctx.randomness, order_id, candidates, 1)
    return picked[0] if picked else None

"""The keeper: acts for a content owner, releasing a content key only to attested machines the owner accepts.

For each order waiting for grants that reads one of the account's offers, and for each machine assigned to it,
the keeper parses the machine's TCB from the ledger, appraises it with the *owner's* policy, checks that the
order's engine is one the offer allows, and posts the DEK sealed to the loader key the TCB binds (bound to order,
content, machine and engine). Otherwise it records a refusal with the reason.

The TCB is appraised with ``expected_nonce`` = its own nonce: freshness was enforced by the chain, which
accepted the TCB only as the answer to a challenge it issued moments before (``machine.challenge``). The
keeper re-checks everything else at its own time, with its own roots and policy.

For the orders its account *placed*, a keeper also re-grants checkpoint keys after a fail-over: the replacement
machine is appraised the same way, and the owner copy of the latest released checkpoint's key goes to it in an
``order.resume_grant`` transaction (:mod:`cloister.node.resume`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cloister.attest.der import Certificate
from cloister.attest.policy import AppraisalPolicy
from cloister.attest.tcb import Tcb, appraise
from cloister.client.sdk import Client
from cloister.crypto.grants import seal_key_grant
from cloister.errors import AttestationError, CloisterError, PolicyViolation
from cloister.ledger.records import FINETUNE, INFERENCE, PENDING_GRANTS, READY, RUNNING, Offer, Order, latest_released
from cloister.ledger.transactions import PAYLOAD_TYPES, PostGrant, PostResumeGrant
from cloister.node.resume import fetch_notice
from cloister.runtime.results import open_result_key

log = logging.getLogger("cloister.keeper")
REFUSE_TYPE = "grant.refuse"


@dataclass(frozen=True)
class Decision:
    """What the keeper did for one (order, offer, machine): granted, or refused and why."""

    order_id: str
    offer_id: str
    machine_id: str
    granted: bool
    reason: str


@dataclass
class Keeper:
    """Grants or refuses for the content offers of ``client``'s account."""

    client: Client
    policy: AppraisalPolicy
    roots_by_platform: Mapping[str, Sequence[Certificate]] | None = None
    allowed_engines: frozenset[str] | None = None
    """The owner's own list of engine digests that may read its content (on top of each offer's restriction)."""
    _decided: set[tuple[str, str, str]] = field(default_factory=set, repr=False)

    def pending(self) -> list[Order]:
        """Orders taking grants that read at least one of this account's offers: those waiting for grants, and
        deployments still serving (a replacement replica needs keys while the others serve)."""
        mine = {offer.offer_id for offer in self.client.ledger.offers(owner=self.client.address, include_retired=True)}
        return [
            o
            for o in self.client.ledger.orders()
            if (o.state == PENDING_GRANTS or (o.kind == INFERENCE and o.state in (READY, RUNNING)))
            and mine.intersection(o.content_offers)
        ]

    def run_once(self) -> list[Decision]:
        """Decide every pending (order, offer, machine) not decided yet, and re-grant checkpoints of own orders."""
        decisions = [decision for order in self.pending() for decision in self.review(order)]
        return decisions + self.resume_grants()

    def resume_grants(self) -> list[Decision]:
        """Grant the latest released checkpoint of each reassigned order this account placed to its new machine."""
        ledger = self.client.ledger
        mine = [o for state in (PENDING_GRANTS, READY) for o in ledger.orders(owner=self.client.address, state=state)]
        return [decision for order in mine if order.kind == FINETUNE for decision in self.resume(order)]

    def resume(self, order: Order) -> list[Decision]:
        """As the order owner, grant the latest released checkpoint of ``order`` to each machine lacking it."""
        ledger = self.client.ledger
        record = latest_released(ledger.checkpoints(order.order_id))
        if record is None:
            return []
        what = f"checkpoint at step {record.step}"
        granted = {
            g.machine_id
            for g in ledger.resume_grants(order.order_id)
            if g.checkpoint_digest == record.checkpoint_digest
        }
        todo = [m for m in order.machines if m not in granted and (order.order_id, what, m) not in self._decided]
        if not todo:
            return []
        writer = ledger.machine(record.machine_id)
        notice = fetch_notice(self.client.store, record, writer.loader_signing_key)
        dek = open_result_key(
            notice.sealed_key, self.client.identity, order_id=order.order_id, content_digest=notice.checkpoint.digest
        )
        engine_digest = str(ledger.offer(order.engine_offer).content_digest)
        decisions = []
        for machine_id in todo:
            self._decided.add((order.order_id, what, machine_id))
            try:
                sealing_key = self._machine_key(machine_id)
            except (AttestationError, PolicyViolation) as exc:
                log.warning("refused the %s of order %s to machine %s: %s", what, order.order_id, machine_id, exc)
                decisions.append(Decision(order.order_id, what, machine_id, False, exc.message))
                continue
            grant = seal_key_grant(
                dek,
                sealing_key,
                order_id=order.order_id,
                content_digest=notice.checkpoint.digest,
                machine_id=machine_id,
                engine_digest=engine_digest,
            )
            self.client.wallet.send(PostResumeGrant(order.order_id, machine_id, grant))
            log.info("granted the %s of order %s to machine %s", what, order.order_id, machine_id)
            decisions.append(Decision(order.order_id, what, machine_id, True, "granted"))
        return decisions

    def review(self, order: Order, *, refuse_reason: str | None = None) -> list[Decision]:
        """Grant (or refuse, with ``refuse_reason`` or the failed check) each of this account's offers in ``order``."""
        ledger = self.client.ledger
        granted = {(g.offer_id, g.machine_id) for g in ledger.grants(order.order_id)}
        engine = ledger.offer(order.engine_offer)
        decisions = []
        for offer_id in dict.fromkeys(order.content_offers):
            offer = ledger.offer(offer_id)
            if offer.owner != self.client.address:
                continue
            for machine_id in order.machines:
                key = (order.order_id, offer_id, machine_id)
                if (offer_id, machine_id) in granted or key in self._decided:
                    continue
                if refuse_reason is not None:
                    decision = self._refuse(order, offer, machine_id, refuse_reason)
                else:
                    decision = self._decide(order, offer, machine_id, str(engine.content_digest))
                self._decided.add(key)
                decisions.append(decision)
        return decisions

    def _decide(self, order: Order, offer: Offer, machine_id: str, engine_digest: str) -> Decision:
        try:
            sealing_key = self._accepted_key(offer, machine_id, engine_digest)
        except (AttestationError, PolicyViolation) as exc:
            return self._refuse(order, offer, machine_id, exc.message)
        dek = self.client.keystore.content_key(str(offer.content_digest))
        sealed = seal_key_grant(
            dek,
            sealing_key,
            order_id=order.order_id,
            content_digest=str(offer.content_digest),
            machine_id=machine_id,
            engine_digest=engine_digest,
        )
        self.client.wallet.send(PostGrant(order.order_id, offer.offer_id, machine_id, sealed))
        log.info("granted %s to machine %s for order %s", offer.offer_id, machine_id, order.order_id)
        return Decision(order.order_id, offer.offer_id, machine_id, True, "granted")

    def _accepted_key(self, offer: Offer, machine_id: str, engine_digest: str) -> bytes:
        """The loader sealing key of ``machine_id`` if its TCB and the engine satisfy the owner; else raise."""
        allowed = offer.restrictions.engine_digests
        if offer.kind != "engine" and allowed and engine_digest not in allowed:
            raise PolicyViolation(
                f"offer {offer.offer_id} allows only engines {', '.join(allowed)}, not {engine_digest}",
                check="engine_digest",
            )
        if offer.kind != "engine" and self.allowed_engines is not None and engine_digest not in self.allowed_engines:
            raise PolicyViolation(
                f"the owner's keeper allows only engines {', '.join(sorted(self.allowed_engines))}, "
                f"not {engine_digest}",
                check="engine_digest",
            )
        return self._machine_key(machine_id)

    def _machine_key(self, machine_id: str) -> bytes:
        """The loader sealing key of ``machine_id`` if it is active and its TCB satisfies the owner's policy."""
        machine = self.client.ledger.machine(machine_id)
        if not machine.active:
            raise PolicyViolation(f"machine {machine_id} is retired", check="machine_active")
        tcb = Tcb.from_bytes(machine.tcb_evidence)
        appraise(tcb, self.policy, now=None, expected_nonce=tcb.nonce, roots_by_platform=self.roots_by_platform)
        if tcb.loader.sealing_key != machine.loader_sealing_key:
            raise PolicyViolation(
                f"machine {machine_id}'s record names another loader key than its TCB binds", check="loader_key"
            )
        return tcb.loader.sealing_key

    def _refuse(self, order: Order, offer: Offer, machine_id: str, reason: str) -> Decision:
        """Record the refusal on the ledger when it has ``grant.refuse``; the order keeps waiting either way."""
        refuse = PAYLOAD_TYPES.get(REFUSE_TYPE)
        if refuse is not None:
            payload = {"order_id": order.order_id, "offer_id": offer.offer_id, "machine_id": machine_id}
            try:
                self.client.wallet.send(refuse.from_payload({**payload, "reason": reason[:4096]}))
            except CloisterError as exc:
                log.warning("could not record the refusal on the ledger: %s", exc.message)
        log.warning("refused %s to machine %s for order %s: %s", offer.offer_id, machine_id, order.order_id, reason)
        return Decision(order.order_id, offer.offer_id, machine_id, False, reason)

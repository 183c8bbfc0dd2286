"""Slashing: disputes over replicas' conflicting commitments, and replicas that let a request time out.

A dispute is judged by :func:`cloister.consensus.verdict.decide`, the very function the gateway used, over
commitments each verified with its machine's attested loader key. Each dissenter's provider loses
``dispute_slash_bps`` of its stake; ``referee_share_bps`` of the slashed total goes to the majority's referees
(or, without referees, to the majority), the rest to the majority's providers, in equal integer shares; what
does not divide evenly is burned. A timeout moves ``timeout_slash_bps`` of the provider's stake to the owner.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from cloister.consensus.commitment import REFEREE, Commitment, SignedCommitment
from cloister.consensus.verdict import decide
from cloister.errors import InvalidSignature, InvalidTransaction, MalformedInput, RecordExists
from cloister.ledger.contracts.call import Call, Handler
from cloister.ledger.contracts.deployments import require_gateway, seat
from cloister.ledger.contracts.orders import require_kind
from cloister.ledger.contracts.settlement import pay
from cloister.ledger.records import (
    DISPUTE_ID_PREFIX,
    INFERENCE,
    MAX_SHARE_BPS,
    Dispute,
    Order,
    Timeout,
    dispute_key,
    timeout_key,
)
from cloister.ledger.transactions import OpenDispute, Payload, ReportTimeout


def slash(call: Call, machine_id: str, bps: int, reason: str) -> int:
    """Take ``bps`` of the machine's provider's stake (floored); returns the amount taken."""
    provider = call.read.machine(machine_id).provider
    account = call.read.account(provider)
    amount = account.stake * bps // MAX_SHARE_BPS
    call.put(dataclasses.replace(account, stake=account.stake - amount))
    call.emit("stake.slashed", machine_id=machine_id, provider=provider, amount=amount, reason=reason)
    return amount


def _commitment(call: Call, order: Order, index: int, raw: bytes, request_digest: str) -> Commitment:
    """The ``index``-th commitment, parsed and verified with the loader key of a machine of the deployment."""
    what = f"commitment {index + 1}"
    try:
        signed = SignedCommitment.parse(raw)
    except MalformedInput as exc:
        raise InvalidTransaction(f"{what} is malformed: {exc.message}") from None
    seat(call, order, signed.machine_id)
    machine = call.read.machine(signed.machine_id)
    try:
        commitment = signed.verify(machine.loader_signing_key)
    except InvalidSignature as exc:
        raise InvalidTransaction(f"{what}: {exc.message}") from None
    if (commitment.deployment_id, commitment.request_digest) != (order.order_id, request_digest):
        raise InvalidTransaction(
            f"{what} is about order {commitment.deployment_id}, request {commitment.request_digest}, not order "
            f"{order.order_id}, request {request_digest}; bring only commitments to the disputed request"
        )
    return commitment


def _rewards(call: Call, commitments: list[Commitment], majority: tuple[str, ...], total: int) -> Counter[str]:
    """Machine id → reward: the referee pot to the majority's referees (else the majority), the rest to the
    majority, each pot in equal integer shares."""
    referee_pot = total * call.params.referee_share_bps // MAX_SHARE_BPS
    referees = sorted({c.machine_id for c in commitments if c.machine_id in majority and c.role == REFEREE})
    rewards: Counter[str] = Counter()
    for pot, winners in ((referee_pot, referees or list(majority)), (total - referee_pot, list(majority))):
        for machine_id in winners:
            rewards[machine_id] += pot // len(winners)
    return rewards


def open_dispute(call: Call, p: OpenDispute) -> None:
    order = call.read.order(p.order_id)
    require_kind(order, INFERENCE, "disputed")
    require_gateway(call, order, "open disputes")
    if call.exists(dispute_key(p.order_id, p.request_digest)):
        raise RecordExists(f"request {p.request_digest} of order {p.order_id} was already disputed; see its record")
    commitments = [_commitment(call, order, i, raw, p.request_digest) for i, raw in enumerate(p.commitments)]
    machines = [c.machine_id for c in commitments]
    if len(set(machines)) != len(machines):
        raise InvalidTransaction("the commitments must come from distinct machines, one each")
    if len({c.output_digest for c in commitments}) < 2:
        raise InvalidTransaction("the commitments all commit the same output; there is nothing to dispute")
    try:
        verdict = decide(commitments)
    except MalformedInput as exc:
        raise InvalidTransaction(f"the commitments cannot be judged together: {exc.message}") from None
    dispute_id = call.new_id(DISPUTE_ID_PREFIX)
    slashed: tuple[str, ...] = ()
    total = 0
    rewards: Counter[str] = Counter()
    if verdict.output_digest is not None:
        slashed = tuple(sorted(verdict.dissenters))
        total = sum(slash(call, m, call.params.dispute_slash_bps, f"dispute {dispute_id}") for m in slashed)
        rewards = _rewards(call, commitments, verdict.majority, total)
    paid = 0
    for machine_id in sorted(rewards):
        provider = call.read.machine(machine_id).provider
        paid += pay(call, order, provider, rewards[machine_id], f"dispute reward {dispute_id} for {machine_id}")
    rewarded = tuple(sorted(m for m, amount in rewards.items() if amount))
    call.put(
        Dispute(
            dispute_id,
            p.order_id,
            p.request_digest,
            p.commitments,
            verdict.output_digest,
            slashed,
            rewarded,
            total,
            call.sender,
            call.now,
        )
    )
    call.emit(
        "dispute.opened",
        dispute_id=dispute_id,
        order_id=p.order_id,
        request_digest=p.request_digest,
        output_digest=verdict.output_digest,
        slashed=list(slashed),
        rewarded=list(rewarded),
        slashed_amount=total,
        burned=total - paid,
    )


def report_timeout(call: Call, p: ReportTimeout) -> None:
    order = call.read.order(p.order_id)
    require_kind(order, INFERENCE, "given timeouts")
    require_gateway(call, order, "report timeouts")
    seat(call, order, p.machine_id)
    if call.exists(timeout_key(p.order_id, p.machine_id, p.request_digest)):
        raise RecordExists(f"machine {p.machine_id} was already reported for request {p.request_digest}")
    amount = slash(call, p.machine_id, call.params.timeout_slash_bps, f"timeout on {p.request_digest}")
    if amount:
        call.credit(order.owner, amount)
    call.put(Timeout(p.order_id, p.machine_id, p.request_digest, amount, call.now))
    call.emit(
        "replica.timeout", order_id=p.order_id, machine_id=p.machine_id, request_digest=p.request_digest, amount=amount
    )


HANDLERS: dict[type[Payload], Handler] = {OpenDispute: open_dispute, ReportTimeout: report_timeout}

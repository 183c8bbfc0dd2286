"""Fail-over: the running machine records checkpoints; anyone moves an order off a machine that went silent.

A reassignment settles the dead machine's share (its last recorded usage, capped by what is left of the lease)
into ``order.usage_seconds`` and releases its :class:`Checkpoint`; grants to it become void (see
``StateReader.grants``). The order goes back to ``pending_grants`` on a machine drawn as ``order.create`` draws,
or fails, paying the time used, when no machine is left.
"""

from __future__ import annotations

import dataclasses

from cloister.errors import InvalidState, NotAuthorized
from cloister.ledger.contracts.assignment import reassign
from cloister.ledger.contracts.call import Call, Handler
from cloister.ledger.contracts.orders import assignee, require_state
from cloister.ledger.contracts.settlement import settle
from cloister.ledger.records import (
    FAILED,
    OPEN_ORDER_STATES,
    PENDING_GRANTS,
    RUNNING,
    Checkpoint,
    Order,
)
from cloister.ledger.transactions import Payload, ReassignOrder, RecordCheckpoint

NO_MACHINE_LEFT = "no eligible machine is left to take the order over"


def record_checkpoint(call: Call, p: RecordCheckpoint) -> None:
    order = call.read.order(p.order_id)
    assignee(call, order, p.machine_id)
    require_state(order, (RUNNING,), "checkpointed")
    last = call.read.checkpoint(p.order_id, p.machine_id)
    if last is not None and (p.step <= last.step or p.usage_seconds < last.usage_seconds):
        raise InvalidState(
            f"machine {p.machine_id} already recorded step {last.step} after {last.usage_seconds}s of usage; "
            "a checkpoint must have a later step and no less usage"
        )
    compute = str(order.compute_offer)
    call.put(
        Checkpoint(p.order_id, p.machine_id, compute, p.step, p.usage_seconds, p.checkpoint_digest, False, call.now)
    )
    call.emit(
        "order.checkpointed",
        order_id=p.order_id,
        machine_id=p.machine_id,
        step=p.step,
        usage_seconds=p.usage_seconds,
        checkpoint_digest=p.checkpoint_digest,
    )


def _release(call: Call, order: Order, machine_id: str) -> int:
    """Release the dead machine's checkpoint with the usage share it is paid for; returns that share."""
    last = call.read.checkpoint(order.order_id, machine_id)
    metered = 0 if last is None else last.usage_seconds
    share = min(metered, order.lease_hours * 3600 - order.usage_seconds)
    step, digest = (0, None) if last is None else (last.step, last.checkpoint_digest)
    call.put(Checkpoint(order.order_id, machine_id, str(order.compute_offer), step, share, digest, True, call.now))
    return share


def reassign_order(call: Call, p: ReassignOrder) -> None:
    """Anyone may move an order off an assigned machine silent for longer than the heartbeat timeout."""
    order = call.read.order(p.order_id)
    if p.machine_id not in order.machines:
        raise NotAuthorized(f"machine {p.machine_id} is not assigned to order {p.order_id}")
    require_state(order, OPEN_ORDER_STATES, "reassigned")
    machine = call.read.machine(p.machine_id)
    timeout = call.params.heartbeat_timeout
    if call.now - machine.last_heartbeat <= timeout:
        raise InvalidState(
            f"machine {p.machine_id} sent a heartbeat at {machine.last_heartbeat}; it can be reassigned only "
            f"after {machine.last_heartbeat + timeout} without another"
        )
    usage = order.usage_seconds + _release(call, order, p.machine_id)
    order = dataclasses.replace(order, usage_seconds=usage)
    tried = {c.machine_id for c in call.read.checkpoints(p.order_id) if c.released}
    content = [call.read.offer(offer_id) for offer_id in order.content_offers]
    picked = reassign(call, p.order_id, content, call.read.offer(str(order.compute_offer)), tried, order.lease_hours)
    if picked is None:
        settle(call, order, 0, completed=False)
        call.put(dataclasses.replace(order, state=FAILED, escrow=0, ended_at=call.now, failure_reason=NO_MACHINE_LEFT))
        call.emit("order.failed", order_id=p.order_id, machine_id=p.machine_id, reason=NO_MACHINE_LEFT)
        return
    new = picked.machine.machine_id
    machines = tuple(new if m == p.machine_id else m for m in order.machines)
    call.put(dataclasses.replace(order, machines=machines, compute_offer=picked.offer.offer_id, state=PENDING_GRANTS))
    call.emit("order.reassigned", order_id=p.order_id, **{"from": p.machine_id, "to": new})


HANDLERS: dict[type[Payload], Handler] = {
    RecordCheckpoint: record_checkpoint,
    ReassignOrder: reassign_order,
}

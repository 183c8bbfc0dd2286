"""Fail-over: the running machine records checkpoints; anyone moves an order off a machine that went silent.

A fine-tune's reassignment settles the dead machine's share (its last recorded usage, capped by what is left of
the lease) into ``order.usage_seconds`` and releases its :class:`Checkpoint`; grants to it become void (see
``StateReader.grants``). The order goes back to ``pending_grants`` on a machine drawn as ``order.create`` draws,
or fails, paying the time used, when no machine is left; its owner then hands the latest checkpoint's key to the
new machine (``order.resume_grant``).

A deployment's reassignment ends the dead replica's endpoint, releases its seat with the seconds it served and
gives the seat to a new machine (which needs grants) while the other replicas keep serving; with no machine
left to take the seat, the deployment goes on with one replica fewer, or fails if it was the last.
"""

from __future__ import annotations

import dataclasses

from cloister.errors import InvalidState, NotAuthorized, RecordExists
from cloister.ledger.contracts.assignment import reassign
from cloister.ledger.contracts.call import Call, Handler
from cloister.ledger.contracts.deployments import leave, seat
from cloister.ledger.contracts.orders import assignee, new_seat, require_kind, require_state
from cloister.ledger.contracts.settlement import settle
from cloister.ledger.records import (
    FAILED,
    FINETUNE,
    INFERENCE,
    OPEN_ORDER_STATES,
    PENDING_GRANTS,
    READY,
    RUNNING,
    Checkpoint,
    Order,
    ResumeGrant,
    latest_released,
    resume_grant_key,
)
from cloister.ledger.transactions import Payload, PostResumeGrant, ReassignOrder, RecordCheckpoint

NO_MACHINE_LEFT = "no eligible machine is left to take the order over"


def record_checkpoint(call: Call, p: RecordCheckpoint) -> None:
    order = call.read.order(p.order_id)
    require_kind(order, FINETUNE, "checkpointed")
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
        Checkpoint(
            p.order_id,
            p.machine_id,
            compute,
            p.step,
            p.usage_seconds,
            p.checkpoint_digest,
            False,
            call.now,
            p.notice_uri,
        )
    )
    call.emit(
        "order.checkpointed",
        order_id=p.order_id,
        machine_id=p.machine_id,
        step=p.step,
        usage_seconds=p.usage_seconds,
        checkpoint_digest=p.checkpoint_digest,
        notice_uri=p.notice_uri,
    )


def _release(call: Call, order: Order, machine_id: str) -> int:
    """Release the dead machine's checkpoint with the usage share it is paid for; returns that share."""
    last = call.read.checkpoint(order.order_id, machine_id)
    metered = 0 if last is None else last.usage_seconds
    share = min(metered, order.lease_hours * 3600 - order.usage_seconds)
    compute = str(order.compute_offer)
    if last is None:
        last = Checkpoint(order.order_id, machine_id, compute, 0, 0, None, False, call.now)
    call.put(dataclasses.replace(last, compute_offer=compute, usage_seconds=share, released=True, updated_at=call.now))
    return share


def _fail(call: Call, order: Order, machine_id: str) -> None:
    """No machine is left: pay the time used and give the rest of the escrow back."""
    settle(call, order, [], completed=False)
    call.put(dataclasses.replace(order, state=FAILED, escrow=0, ended_at=call.now, failure_reason=NO_MACHINE_LEFT))
    call.emit("order.failed", order_id=order.order_id, machine_id=machine_id, reason=NO_MACHINE_LEFT, delivery_uri=None)


def _reassign_finetune(call: Call, order: Order, machine_id: str) -> None:
    order = dataclasses.replace(order, usage_seconds=order.usage_seconds + _release(call, order, machine_id))
    tried = {c.machine_id for c in call.read.checkpoints(order.order_id) if c.released}
    content = [call.read.offer(offer_id) for offer_id in order.content_offers]
    current = call.read.offer(str(order.compute_offer))
    picked = reassign(call, order.order_id, FINETUNE, content, current, tried, order.lease_hours)
    if picked is None:
        _fail(call, order, machine_id)
        return
    new = picked.machine.machine_id
    machines = tuple(new if m == machine_id else m for m in order.machines)
    call.put(dataclasses.replace(order, machines=machines, compute_offer=picked.offer.offer_id, state=PENDING_GRANTS))
    call.emit("order.reassigned", order_id=order.order_id, **{"from": machine_id, "to": new})


def _reassign_deployment(call: Call, order: Order, machine_id: str) -> None:
    left = seat(call, order, machine_id)
    served = leave(call, order, machine_id)
    call.put(dataclasses.replace(left, usage_seconds=served, released=True, updated_at=call.now))
    order = dataclasses.replace(order, usage_seconds=order.usage_seconds + served)
    tried = {c.machine_id for c in call.read.checkpoints(order.order_id) if c.released}
    content = [call.read.offer(offer_id) for offer_id in order.content_offers]
    current = call.read.offer(left.compute_offer)
    picked = reassign(call, order.order_id, INFERENCE, content, current, tried, order.lease_hours)
    if picked is None and len(order.machines) == 1:
        _fail(call, order, machine_id)
        return
    if picked is None:
        machines = tuple(m for m in order.machines if m != machine_id)
        granted = len(call.read.grants(order.order_id)) == len(order.content_offers) * len(machines)
        state = READY if order.state == PENDING_GRANTS and granted else order.state
        call.put(dataclasses.replace(order, machines=machines, state=state))
        call.emit("order.reassigned", order_id=order.order_id, **{"from": machine_id, "to": None})
        return
    new = picked.machine.machine_id
    machines = tuple(new if m == machine_id else m for m in order.machines)
    state = PENDING_GRANTS if order.state == READY else order.state
    call.put(dataclasses.replace(order, machines=machines, state=state))
    call.put(new_seat(call, order.order_id, new, picked.offer.offer_id))
    call.emit("order.reassigned", order_id=order.order_id, **{"from": machine_id, "to": new})


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
    if order.kind == INFERENCE:
        _reassign_deployment(call, order, p.machine_id)
    else:
        _reassign_finetune(call, order, p.machine_id)


def post_resume_grant(call: Call, p: PostResumeGrant) -> None:
    """The owner hands the latest released checkpoint's key to a machine the fine-tune was moved to."""
    order = call.read.order(p.order_id)
    require_kind(order, FINETUNE, "resumed")
    if order.owner != call.sender:
        raise NotAuthorized(f"order {p.order_id} belongs to {order.owner}; only its owner can grant its checkpoints")
    require_state(order, (PENDING_GRANTS, READY), "given a resume grant")
    if p.machine_id not in order.machines:
        raise NotAuthorized(f"machine {p.machine_id} is not assigned to order {p.order_id}; name an assignee")
    latest = latest_released(call.read.checkpoints(p.order_id))
    if latest is None or latest.checkpoint_digest is None:
        raise InvalidState(f"order {p.order_id} left no checkpoint behind; there is nothing to resume from")
    if call.exists(resume_grant_key(p.order_id, p.machine_id)):
        raise RecordExists(f"machine {p.machine_id} already holds a resume grant for order {p.order_id}")
    call.put(ResumeGrant(p.order_id, p.machine_id, latest.checkpoint_digest, p.sealed_key, call.now))
    call.emit(
        "order.resume_granted",
        order_id=p.order_id,
        machine_id=p.machine_id,
        checkpoint_digest=latest.checkpoint_digest,
    )


HANDLERS: dict[type[Payload], Handler] = {
    RecordCheckpoint: record_checkpoint,
    ReassignOrder: reassign_order,
    PostResumeGrant: post_resume_grant,
}

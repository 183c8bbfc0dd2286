"""Machines: registration with their TCB, liveness by heartbeat, retirement."""

from __future__ import annotations

import dataclasses

from cloister.errors import InvalidState, NotAuthorized
from cloister.ledger.contracts.call import Call, Handler
from cloister.ledger.records import MACHINE_ID_PREFIX, READY, RUNNING, Machine, provider_key
from cloister.ledger.transactions import Heartbeat, Payload, RegisterMachine, RetireMachine


def provided_machine(call: Call, machine_id: str) -> Machine:
    """The machine, if the sender is its provider; only providers act for their machines."""
    machine = call.read.machine(machine_id)
    if machine.provider != call.sender:
        raise NotAuthorized(f"machine {machine_id} belongs to provider {machine.provider}; send this from that account")
    return machine


def active_machine(call: Call, machine_id: str) -> Machine:
    machine = provided_machine(call, machine_id)
    if not machine.active:
        raise InvalidState(f"machine {machine_id} is retired; register the machine again to use it")
    return machine


def admit(call: Call, p: RegisterMachine) -> Machine:
    """The machine record a registration creates: the one place a TCB is judged before a machine may join.

    Attestation appraisal (verify ``tcb_evidence``, check its report data binds the two loader keys, validate
    it against the network's policy at ledger time) is wired in here by the attestation work. Until then the
    evidence is recorded as given, unappraised, and each content owner appraises it before granting a key.
    """
    return Machine(
        machine_id=call.new_id(MACHINE_ID_PREFIX),
        provider=call.sender,
        platform=p.platform,
        region=p.region,
        specs=p.specs,
        tcb_evidence=p.tcb_evidence,
        loader_signing_key=p.loader_signing_key,
        loader_sealing_key=p.loader_sealing_key,
        registered_at=call.now,
        last_heartbeat=call.now,
        active=True,
    )


def register_machine(call: Call, p: RegisterMachine) -> None:
    if not call.exists(provider_key(call.sender)):
        raise NotAuthorized(f"account {call.sender} is not a provider; send provider.register first")
    machine = admit(call, p)
    call.put(machine)
    call.emit(
        "machine.registered",
        machine_id=machine.machine_id,
        provider=machine.provider,
        platform=machine.platform,
        region=machine.region,
    )


def heartbeat(call: Call, p: Heartbeat) -> None:
    """Keep a machine live. No event: heartbeats are frequent and the record already shows the latest one."""
    machine = active_machine(call, p.machine_id)
    call.put(dataclasses.replace(machine, last_heartbeat=call.now))


def retire_machine(call: Call, p: RetireMachine) -> None:
    machine = active_machine(call, p.machine_id)
    working = [o.order_id for o in call.read.orders(machine_id=p.machine_id) if o.state in (READY, RUNNING)]
    if working:
        raise InvalidState(
            f"machine {p.machine_id} is working on order {', '.join(working)}; "
            "finish or fail that order before retiring the machine"
        )
    call.put(dataclasses.replace(machine, active=False))
    call.emit("machine.retired", machine_id=p.machine_id, provider=machine.provider)


HANDLERS: dict[type[Payload], Handler] = {
    RegisterMachine: register_machine,
    Heartbeat: heartbeat,
    RetireMachine: retire_machine,
}

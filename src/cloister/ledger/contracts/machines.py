"""Machines: attestation challenges, registration with an appraised TCB, liveness by heartbeat, retirement."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from typing import Final

from cloister.attest.tcb import Tcb, appraise
from cloister.errors import InvalidState, InvalidTransaction, MalformedInput, NotAuthorized, StaleEvidence
from cloister.ledger.contracts.call import Call, Handler
from cloister.ledger.records import (
    MACHINE_ID_PREFIX,
    READY,
    RUNNING,
    Challenge,
    Machine,
    MachineSpecs,
    challenge_key,
    provider_key,
)
from cloister.ledger.transactions import ChallengeMachine, Heartbeat, Payload, RegisterMachine, RetireMachine

CHALLENGE_DOMAIN: Final = b"cloister/machine-challenge/v1\x00"


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


def challenge(call: Call, p: ChallengeMachine) -> None:
    """Issue the sender a fresh nonce from the block's randomness; it replaces any earlier one."""
    if not call.exists(provider_key(call.sender)):
        raise NotAuthorized(f"account {call.sender} is not a provider; send provider.register first")
    nonce = hashlib.sha256(CHALLENGE_DOMAIN + call.ctx.randomness + call.tx_hash.encode()).digest()
    call.put(Challenge(call.sender, nonce, call.now, used=False))
    call.emit(
        "machine.challenged",
        provider=call.sender,
        nonce=nonce.hex(),
        expires_at=call.now + call.params.challenge_ttl,
    )


def outstanding_challenge(call: Call) -> Challenge:
    """The sender's unused, unexpired challenge: the only nonce a registering TCB may answer."""
    stored = call.state.get(challenge_key(call.sender))
    found = Challenge.from_json(stored) if stored is not None else None
    if found is None or found.used:
        raise StaleEvidence(
            f"{call.sender} has no outstanding challenge"
            + (" (its last one was already used: a TCB answers one challenge only)" if found else "")
            + "; send machine.challenge and collect evidence for the nonce it returns",
            check="challenge",
        )
    age = call.now - found.issued_at
    if age > call.params.challenge_ttl:
        raise StaleEvidence(
            f"the challenge is {age}s old, past its {call.params.challenge_ttl}s lifetime; "
            "send machine.challenge again and collect fresh evidence",
            check="challenge",
        )
    return found


def admit(call: Call, p: RegisterMachine, nonce: bytes) -> Machine:
    """The machine record a registration creates: the one place a TCB is judged before a machine may join.

    The TCB is appraised against the genesis policy and sim roots at ledger time, answering ``nonce``; the
    record takes its platform, declared specs and loader keys from the TCB, and keeps the result's digest and
    verdict. A rejection raises the attestation error naming the failed check.
    """
    tcb = Tcb.from_bytes(p.tcb_evidence)
    try:
        specs = MachineSpecs.from_json(tcb.specs)
    except MalformedInput as exc:
        raise InvalidTransaction(f"the TCB's declared specs are invalid: {exc.message}") from None
    result = appraise(
        tcb,
        call.params.appraisal_policy,
        now=datetime.fromtimestamp(call.now, UTC),
        expected_nonce=nonce,
        roots_by_platform=call.params.trusted_roots,
    )
    return Machine(
        machine_id=call.new_id(MACHINE_ID_PREFIX),
        provider=call.sender,
        platform=tcb.cpu.platform,
        region=p.region,
        specs=specs,
        tcb_evidence=p.tcb_evidence,
        loader_signing_key=tcb.loader.signing_key,
        loader_sealing_key=tcb.loader.sealing_key,
        registered_at=call.now,
        last_heartbeat=call.now,
        active=True,
        attestation_digest=result.digest,
        attestation_verdict=result.verdict,
    )


def register_machine(call: Call, p: RegisterMachine) -> None:
    if not call.exists(provider_key(call.sender)):
        raise NotAuthorized(f"account {call.sender} is not a provider; send provider.register first")
    pending = outstanding_challenge(call)
    machine = admit(call, p, pending.nonce)
    call.put(dataclasses.replace(pending, used=True))
    call.put(machine)
    call.emit(
        "machine.registered",
        machine_id=machine.machine_id,
        provider=machine.provider,
        platform=machine.platform,
        region=machine.region,
        attestation=machine.attestation_digest,
        verdict=machine.attestation_verdict,
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
    ChallengeMachine: challenge,
    RegisterMachine: register_machine,
    Heartbeat: heartbeat,
    RetireMachine: retire_machine,
}

"""Machine registration appraises a real (sim) TCB: challenges, freshness, replay, policy, and what gets recorded."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.ledger import attested
from tests.ledger.conftest import GENESIS_TIME, FakeClock

from cloister.attest.sim import SimVendor
from cloister.attest.tcb import Tcb, appraise
from cloister.crypto.identity import Identity
from cloister.errors import (
    AttestationError,
    CertificateInvalid,
    EvidenceMalformed,
    InvalidTransaction,
    MalformedInput,
    PolicyViolation,
    StaleEvidence,
    VerificationFailed,
)
from cloister.ledger.contracts import BlockContext, execute
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.envelope import SignedTransaction, Transaction
from cloister.ledger.genesis import ContractParams, Genesis
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.records import MachineSpecs
from cloister.ledger.state import MemoryState
from cloister.ledger.transactions import (
    ChallengeMachine,
    Payload,
    RegisterAccount,
    RegisterMachine,
    RegisterProvider,
)
from cloister.ledger.verify import verify_ledger
from cloister.ledger.wallet import Wallet

SPECS = MachineSpecs(cpu_cores=4, memory_gib=16, gpus=("H100",), disk_gib=100)


def events(receipt: TxReceipt) -> list[tuple[str, dict[str, Any]]]:
    return [(event.kind, event.attrs) for event in receipt.events]


@pytest.fixture
def provider(make_wallet: Callable[..., Wallet]) -> Wallet:
    wallet = make_wallet("acme")
    wallet.send(RegisterProvider("acme", "attested machines"))
    return wallet


def challenge(provider: Wallet) -> bytes:
    return attested.challenged_nonce(events(provider.send(ChallengeMachine())))


def refused(provider: Wallet, payload: Payload, error: type[AttestationError], check: str) -> AttestationError:
    """The registration is refused with ``error`` naming ``check`` (also over HTTP), and no machine appears."""
    with pytest.raises(error) as caught:
        provider.send(payload)
    assert caught.value.check == check, caught.value.message
    assert caught.value.details["check"] == check
    return caught.value


# --- challenges and freshness, on every backend -----------------------------------------------------------------


def test_challenge_issues_a_fresh_nonce_with_its_deadline(provider: Wallet, clock: FakeClock) -> None:
    found = [attrs for kind, attrs in events(provider.send(ChallengeMachine())) if kind == "machine.challenged"]
    assert len(found) == 1
    assert found[0]["provider"] == provider.address
    assert found[0]["expires_at"] == clock.now + 600
    assert len(bytes.fromhex(found[0]["nonce"])) == 32
    assert challenge(provider) != bytes.fromhex(found[0]["nonce"])


def test_registration_consumes_the_challenge_and_a_replay_is_refused(provider: Wallet, ledger: Ledger) -> None:
    register = attested.registration(challenge(provider), SPECS)
    machine_id = provider.send(register).events[0].attrs["machine_id"]
    assert ledger.machine(machine_id).attestation_verdict == "simulated"
    error = refused(provider, register, StaleEvidence, "challenge")
    assert "already used" in error.message
    refused(provider, attested.registration(bytes(32), SPECS), StaleEvidence, "challenge")
    assert len(ledger.machines()) == 1


def test_registration_needs_a_challenge(provider: Wallet, ledger: Ledger) -> None:
    error = refused(provider, attested.registration(bytes(32), SPECS), StaleEvidence, "challenge")
    assert "send machine.challenge" in error.message
    assert ledger.machines() == []


def test_a_tcb_for_an_older_challenge_is_stale(provider: Wallet, ledger: Ledger) -> None:
    old = challenge(provider)
    fresh = challenge(provider)
    refused(provider, attested.registration(old, SPECS), StaleEvidence, "nonce")
    provider.send(attested.registration(fresh, SPECS))
    assert len(ledger.machines()) == 1


def test_an_expired_challenge_is_refused(provider: Wallet, clock: FakeClock) -> None:
    nonce = challenge(provider)
    clock.advance(601)
    error = refused(provider, attested.registration(nonce, SPECS), StaleEvidence, "challenge")
    assert "601s old" in error.message


def test_a_challenge_at_its_deadline_still_counts(provider: Wallet, clock: FakeClock) -> None:
    nonce = challenge(provider)
    clock.advance(600)
    provider.send(attested.registration(nonce, SPECS))


def test_a_refused_registration_leaves_the_challenge_usable(provider: Wallet, ledger: Ledger) -> None:
    nonce = challenge(provider)
    refused(provider, attested.registration(nonce, SPECS, debug=True), PolicyViolation, "cpu.debug")
    provider.send(attested.registration(nonce, SPECS))
    assert len(ledger.machines()) == 1


# --- the appraisal itself --------------------------------------------------------------------------------------


def test_the_machine_record_takes_platform_specs_and_keys_from_the_tcb(provider: Wallet, ledger: Ledger) -> None:
    loader = Identity.generate().public
    register = attested.registration(challenge(provider), SPECS, "eu-north", loader=loader)
    machine = ledger.machine(provider.send(register).events[0].attrs["machine_id"])
    assert (machine.platform, machine.region, machine.specs) == ("sim", "eu-north", SPECS)
    assert (machine.loader_signing_key, machine.loader_sealing_key) == (loader.signing_key, loader.sealing_key)
    assert machine.tcb_evidence == register.tcb_evidence
    assert machine.attestation_digest.startswith("sha256:")


def test_the_recorded_digest_is_the_appraisal_at_ledger_time(
    provider: Wallet, ledger: Ledger, genesis: Genesis
) -> None:
    nonce = challenge(provider)
    register = attested.registration(nonce, SPECS)
    receipt = provider.send(register)
    machine = ledger.machine(receipt.events[0].attrs["machine_id"])
    result = appraise(
        Tcb.from_bytes(register.tcb_evidence),
        genesis.params.appraisal_policy,
        now=datetime.fromtimestamp(machine.registered_at, UTC),
        expected_nonce=nonce,
        roots_by_platform=genesis.params.trusted_roots,
    )
    assert machine.attestation_digest == result.digest
    assert result.policy_digest == genesis.params.appraisal_policy.digest


def test_debug_reports_are_refused_by_the_devnet_policy(provider: Wallet) -> None:
    refused(provider, attested.registration(challenge(provider), SPECS, debug=True), PolicyViolation, "cpu.debug")


@pytest.mark.parametrize(("root_name", "check"), [("Rogue root", "cpu.roots"), ("Cloister sim root", "cpu.chain")])
def test_a_chip_from_another_vendor_is_not_trusted(provider: Wallet, root_name: str, check: str) -> None:
    """Another root is unknown; an impostor root with the trusted root's name fails on the signature."""
    stranger = SimVendor.generate(name=root_name, now=attested.EPOCH, lifetime=attested.LIFETIME)
    chip = stranger.issue_chip("intruder", now=attested.EPOCH, lifetime=attested.LIFETIME)
    register = attested.registration(challenge(provider), SPECS, chip=chip)
    refused(provider, register, CertificateInvalid, check)


def test_a_swapped_loader_key_breaks_the_binding(provider: Wallet) -> None:
    tcb = attested.sim_tcb(challenge(provider), SPECS)
    swapped = dataclasses.replace(tcb, loader=Identity.generate().public)
    refused(provider, RegisterMachine("eu", swapped.to_bytes()), VerificationFailed, "loader_binding")


def test_swapped_gpu_evidence_breaks_the_binding(provider: Wallet) -> None:
    nonce = challenge(provider)
    tcb = attested.sim_tcb(nonce, SPECS, gpu=True)
    other = attested.sim_tcb(nonce, SPECS, gpu=True)
    assert other.gpu is not None and other.gpu != tcb.gpu  # same nonce, another signature
    swapped = dataclasses.replace(tcb, gpu=other.gpu)
    refused(provider, RegisterMachine("eu", swapped.to_bytes()), VerificationFailed, "gpu_binding")


def test_malformed_evidence_and_specs_are_refused(provider: Wallet) -> None:
    tcb = attested.sim_tcb(challenge(provider), SPECS)
    refused(provider, RegisterMachine("eu", b"not json"), EvidenceMalformed, "tcb")
    bad_specs = {**tcb.to_json(), "specs": {"cpu_cores": 0}}
    with pytest.raises(InvalidTransaction, match="declared specs"):
        provider.send(RegisterMachine("eu", json.dumps(bad_specs).encode()))
    report = tcb.cpu.evidence["report"]
    flipped = base64.b64encode(bytes([base64.b64decode(report)[0] ^ 1]) + base64.b64decode(report)[1:]).decode()
    tampered = {**tcb.to_json(), "cpu": {"platform": "sim", "evidence": {**tcb.cpu.evidence, "report": flipped}}}
    refused(provider, RegisterMachine("eu", json.dumps(tampered).encode()), EvidenceMalformed, "cpu.report")


# --- the network's policy comes from genesis --------------------------------------------------------------------


class Chain:
    """Just enough of a backend to apply transactions under a chosen genesis."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis, self.state, self.height = genesis, MemoryState(), 0

    def run(self, who: Identity, payload: Payload, nonce: int) -> list[tuple[str, dict[str, Any]]]:
        tx = Transaction(payload.TYPE, payload.to_payload(), who.address, nonce, self.genesis.chain_id)
        ctx = BlockContext(self.height + 1, GENESIS_TIME, bytes([self.height % 256]) * 32)
        outcome = execute(self.state, SignedTransaction.sign(who, tx), ctx, self.genesis)
        self.state.commit(outcome.writes)
        self.height += 1
        return outcome.events

    def provider(self) -> Identity:
        who = Identity.generate()
        self.run(who, RegisterAccount("p", who.public.sealing_key), 1)
        self.run(who, RegisterProvider("p", ""), 2)
        return who


def test_a_real_network_refuses_sim_evidence() -> None:
    chain = Chain(Genesis("cloister-real", GENESIS_TIME, ContractParams(sim_roots=(attested.VENDOR.root_pem,))))
    who = chain.provider()
    nonce = attested.challenged_nonce(chain.run(who, ChallengeMachine(), 3))
    before = copy.deepcopy(chain.state.data)
    with pytest.raises(PolicyViolation) as caught:
        chain.run(who, attested.registration(nonce, SPECS), 4)
    assert caught.value.check == "cpu_platform"
    assert chain.state.data == before


def test_allowing_a_platform_without_allowing_simulation_refuses_sim() -> None:
    policy = json.loads(attested.DEVNET_POLICY)
    params = attested.params(attestation_policy=json.dumps({**policy, "allow_simulated": False}))
    chain = Chain(Genesis("cloister-strict", GENESIS_TIME, params))
    who = chain.provider()
    nonce = attested.challenged_nonce(chain.run(who, ChallengeMachine(), 3))
    with pytest.raises(PolicyViolation) as caught:
        chain.run(who, attested.registration(nonce, SPECS), 4)
    assert caught.value.check == "simulated"


def test_the_challenge_lifetime_is_a_genesis_parameter() -> None:
    chain = Chain(Genesis("cloister-ttl", GENESIS_TIME, attested.params(challenge_ttl=5)))
    who = chain.provider()
    (attrs,) = [a for kind, a in chain.run(who, ChallengeMachine(), 3) if kind == "machine.challenged"]
    assert attrs["expires_at"] == GENESIS_TIME + 5


def test_devnet_genesis_carries_its_policy_and_roots() -> None:
    genesis = Genesis.devnet(GENESIS_TIME, sim_roots=(attested.VENDOR.root_pem,))
    assert genesis.params.appraisal_policy.allow_simulated
    assert genesis.params.trusted_roots == {"sim": (attested.VENDOR.certificate,)}
    again = Genesis.from_json(json.loads(json.dumps(genesis.to_json())))
    assert again == genesis and again.hash == genesis.hash
    plain = Genesis.devnet(GENESIS_TIME)
    assert plain.params.sim_roots == () and plain.params.trusted_roots == {"sim": ()}


def test_a_genesis_without_attestation_fields_gets_the_real_network_policy() -> None:
    old = {"chain_id": "c", "time": 1, "params": {"faucet_limit": 0, "heartbeat_timeout": 120, "min_provider_stake": 0}}
    params = Genesis.from_json(old).params
    assert not params.appraisal_policy.allow_simulated and params.sim_roots == () and params.challenge_ttl == 600


@pytest.mark.parametrize(
    "change",
    [
        {"attestation_policy": "{not json"},
        {"attestation_policy": json.dumps({"allow_simulated": "yes"})},
        {"attestation_policy": {"allow_simulated": True}},
        {"sim_roots": "-----BEGIN CERTIFICATE-----"},
        {"sim_roots": ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"]},
    ],
)
def test_a_bad_attestation_genesis_is_refused(change: dict[str, Any]) -> None:
    data = Genesis.devnet(GENESIS_TIME).to_json()
    with pytest.raises(MalformedInput):
        Genesis.from_json({**data, "params": {**data["params"], **change}})


def test_a_replay_re_appraises_every_registration(tmp_path: Path, genesis: Genesis, clock: FakeClock) -> None:
    ledger = EmbeddedLedger.create(tmp_path / "ledger.db", genesis, clock=clock)
    try:
        wallet = Wallet(Identity.generate(), ledger)
        wallet.register("acme")
        wallet.send(RegisterProvider("acme", ""))
        for _ in range(2):
            wallet.send(attested.registration(challenge(wallet), SPECS))
            clock.advance(30)
    finally:
        ledger.close()
    assert verify_ledger(tmp_path / "ledger.db").height == 6

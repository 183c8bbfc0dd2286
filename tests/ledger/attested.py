"""Real (sim) TCBs for ledger tests: one sim vendor trusted by the test genesis, and registration payloads.

The vendor's certificates are valid from 1970 for 150 years, so they cover every ledger time the tests use.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from cloister.attest.policy import AppraisalPolicy
from cloister.attest.sim import SimChip, SimVendor
from cloister.attest.tcb import Tcb, build_sim_tcb
from cloister.crypto.identity import Identity, PublicIdentity
from cloister.ledger.genesis import ContractParams, policy_json
from cloister.ledger.records import MachineSpecs
from cloister.ledger.transactions import RegisterMachine

EPOCH = datetime(1970, 1, 1, 1, tzinfo=UTC)
LIFETIME = timedelta(days=150 * 365)
VENDOR = SimVendor.generate(now=EPOCH, lifetime=LIFETIME)
CHIP = VENDOR.issue_chip("test-node", now=EPOCH, lifetime=LIFETIME)
GPU_CHIP = VENDOR.issue_chip("test-gpu", kind="gpu", now=EPOCH, lifetime=LIFETIME)
MEASUREMENT = hashlib.sha384(b"test loader image").digest()
DEVNET_POLICY = policy_json(AppraisalPolicy.packaged("devnet"))


def params(**overrides: Any) -> ContractParams:
    """Contract parameters with the devnet policy and the test vendor's root (what `Genesis.devnet` sets up)."""
    return ContractParams(**{"attestation_policy": DEVNET_POLICY, "sim_roots": (VENDOR.root_pem,), **overrides})


def sim_tcb(
    nonce: bytes,
    specs: MachineSpecs,
    *,
    loader: PublicIdentity | None = None,
    chip: SimChip = CHIP,
    gpu: bool = False,
    debug: bool = False,
) -> Tcb:
    return build_sim_tcb(
        chip,
        GPU_CHIP if gpu else None,
        loader=loader or Identity.generate().public,
        nonce=nonce,
        specs=specs.to_json(),
        measurement=MEASUREMENT,
        debug=debug,
    )


def registration(nonce: bytes, specs: MachineSpecs, region: str = "eu-west", **tcb: Any) -> RegisterMachine:
    """A ``machine.register`` payload whose sim TCB answers ``nonce`` (the ``machine.challenged`` event's)."""
    return RegisterMachine(region, sim_tcb(nonce, specs, **tcb).to_bytes())


def challenged_nonce(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    """The nonce a ``machine.challenge`` transaction issued, from its (kind, attrs) events."""
    (nonce,) = [attrs["nonce"] for kind, attrs in events if kind == "machine.challenged"]
    return bytes.fromhex(nonce)

"""Genesis: the chain id and the contract parameters every replay starts from.

The parameters include the network's attestation policy and, on a devnet, the sim vendor roots it trusts: what a
machine must prove to register is fixed at genesis, so every replay judges every TCB exactly as it was judged.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from cloister.attest.der import Certificate, parse_pem_certificates
from cloister.attest.policy import AppraisalPolicy
from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import digest_bytes
from cloister.errors import CloisterError, MalformedInput

UNITS_PER_TOKEN = 1_000_000
"""Balances and prices are integers in micro-tokens; ``2`` tokens is ``2_000_000`` units."""


def policy_json(policy: AppraisalPolicy) -> str:
    """How a genesis stores an appraisal policy: its canonical JSON text."""
    return canonical_json(policy.to_json()).decode()


@dataclass(frozen=True)
class ContractParams:
    faucet_limit: int = 0
    """Largest single faucet drip in units; 0 disables the faucet (any real network)."""
    heartbeat_timeout: int = 120
    """Seconds of ledger time after the last heartbeat before a machine stops counting as live."""
    min_provider_stake: int = 0
    """Stake (units) a provider must hold for its machines to be assigned work."""
    challenge_ttl: int = 600
    """Seconds of ledger time a ``machine.challenge`` nonce stays usable for ``machine.register``."""
    attestation_policy: str = field(default_factory=lambda: policy_json(AppraisalPolicy()))
    """The canonical JSON of the appraisal policy every registering machine's TCB must satisfy. The default is a
    real network's: hardware TEEs only."""
    sim_roots: tuple[str, ...] = ()
    """PEM certificates of the sim vendor roots this network trusts: a devnet's own root, none on a real network."""
    min_serving_stake: int = 50 * UNITS_PER_TOKEN
    """Stake (units) a provider must hold for its machines to be assigned to a deployment: what a lying or
    silent replica can be slashed."""
    max_replicas: int = 16
    """Most machines one deployment may ask for."""
    dispute_slash_bps: int = 5000
    """Share of its provider's stake (basis points) a replica loses for committing an output a dispute ruled wrong."""
    referee_share_bps: int = 2000
    """Share of a dispute's slashed stake (basis points) paid to the referees of the majority; the rest goes to
    the majority's providers."""
    timeout_slash_bps: int = 500
    """Share of its provider's stake (basis points) a replica loses for not committing before the gateway's
    timeout; it goes to the deployment's owner."""

    @cached_property
    def appraisal_policy(self) -> AppraisalPolicy:
        return AppraisalPolicy.from_json(loads(self.attestation_policy))

    @cached_property
    def trusted_roots(self) -> dict[str, tuple[Certificate, ...]]:
        """Roots given at genesis, by platform (only ``sim``: real vendors' roots are pinned in the code)."""
        return {"sim": tuple(cert for pem in self.sim_roots for cert in parse_pem_certificates(pem))}

    def __post_init__(self) -> None:
        """Parse the policy and the roots now, so a bad genesis fails when it is made, not at the first TCB."""
        for name in ("dispute_slash_bps", "referee_share_bps", "timeout_slash_bps"):
            if not 0 <= getattr(self, name) <= 10_000:
                raise MalformedInput(f"genesis parameters: {name} must be from 0 to 10000 basis points")
        if not 1 <= self.max_replicas <= 64:
            raise MalformedInput("genesis parameters: max_replicas must be from 1 to 64")
        try:
            _ = self.appraisal_policy  # cached: contracts reuse the parsed values
            _ = self.trusted_roots
        except CloisterError as exc:
            raise MalformedInput(f"genesis parameters: {exc.message}") from None


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    time: int
    params: ContractParams = field(default_factory=ContractParams)

    @classmethod
    def devnet(cls, time: int, *, sim_roots: Sequence[str] = ()) -> Genesis:
        """A fresh devnet: random chain id, generous faucet, the devnet policy, the given sim vendor roots."""
        params = ContractParams(
            faucet_limit=1_000_000 * UNITS_PER_TOKEN,
            attestation_policy=policy_json(AppraisalPolicy.packaged("devnet")),
            sim_roots=tuple(sim_roots),
        )
        return cls(chain_id=f"cloister-devnet-{secrets.token_hex(4)}", time=time, params=params)

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "time": self.time, "params": asdict(self.params)}

    @classmethod
    def from_json(cls, data: Any) -> Genesis:
        try:
            params = dict(data["params"])
            if "sim_roots" in params:
                if not isinstance(params["sim_roots"], list) or not all(
                    isinstance(p, str) for p in params["sim_roots"]
                ):
                    raise TypeError("sim_roots must be a list of PEM strings")
                params["sim_roots"] = tuple(params["sim_roots"])
            if not isinstance(params.get("attestation_policy", ""), str):
                raise TypeError("attestation_policy must be the policy's canonical JSON text")
            return cls(str(data["chain_id"]), int(data["time"]), ContractParams(**params))
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedInput(f"not a genesis document: {exc}") from None

    @property
    def hash(self) -> str:
        return digest_bytes(canonical_json(self.to_json()))

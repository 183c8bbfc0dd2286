"""Genesis: the chain id and the contract parameters every replay starts from."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.errors import MalformedInput

UNITS_PER_TOKEN = 1_000_000
"""Balances and prices are integers in micro-tokens; ``2`` tokens is ``2_000_000`` units."""


@dataclass(frozen=True)
class ContractParams:
    faucet_limit: int = 0
    """Largest single faucet drip in units; 0 disables the faucet (any real network)."""
    heartbeat_timeout: int = 120
    """Seconds of ledger time after the last heartbeat before a machine stops counting as live."""
    min_provider_stake: int = 0
    """Stake (units) a provider must hold for its machines to be assigned work."""


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    time: int
    params: ContractParams = field(default_factory=ContractParams)

    @classmethod
    def devnet(cls, time: int) -> Genesis:
        """A fresh devnet: random chain id, generous faucet."""
        return cls(
            chain_id=f"cloister-devnet-{secrets.token_hex(4)}",
            time=time,
            params=ContractParams(faucet_limit=1_000_000 * UNITS_PER_TOKEN),
        )

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "time": self.time, "params": asdict(self.params)}

    @classmethod
    def from_json(cls, data: Any) -> Genesis:
        try:
            return cls(str(data["chain_id"]), int(data["time"]), ContractParams(**data["params"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedInput(f"not a genesis document: {exc}") from None

    @property
    def hash(self) -> str:
        return digest_bytes(canonical_json(self.to_json()))

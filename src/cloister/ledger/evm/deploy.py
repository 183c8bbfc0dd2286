"""Deploying the contracts to a chain, and the deployment record clients connect with.

The libraries go first; their addresses are linked into the ``Cloister`` bytecode, whose constructor takes the
chain name, the genesis hash and time, and the contract parameters. The :class:`Deployment` (addresses, block,
chain id and the full genesis document) is what a client needs to find and trust the ledger; it is saved as
JSON next to a devnet and printed by ``cloister ledger deploy``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from cloister.crypto.digest import parse_digest
from cloister.errors import ConfigError, LedgerError, MalformedInput
from cloister.ledger.evm.abi import abi_type
from cloister.ledger.evm.compile import CONTRACT, LIBRARIES, load_artifact
from cloister.ledger.evm.rpc import Reverted, Rpc
from cloister.ledger.evm.transact import GasSource, Sender
from cloister.ledger.genesis import Genesis

_PLACEHOLDER = re.compile(r"__\$[0-9a-f]{34}\$__")


@dataclass(frozen=True)
class Deployment:
    """Where the Cloister contract lives and the genesis it was deployed with."""

    address: str
    block: int
    eth_chain_id: int
    genesis: Genesis
    libraries: dict[str, str]
    registrar: str
    """The attestation registrar: the key whose signature the contract requires on each machine appraisal."""

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "block": self.block,
            "eth_chain_id": self.eth_chain_id,
            "genesis": json.loads(json.dumps(self.genesis.to_json())),  # tuples as lists, as a file has them
            "libraries": self.libraries,
            "registrar": self.registrar,
        }

    @classmethod
    def from_json(cls, data: Any) -> Deployment:
        try:
            return cls(
                to_checksum_address(data["address"]),
                int(data["block"]),
                int(data["eth_chain_id"]),
                Genesis.from_json(data["genesis"]),
                {str(k): to_checksum_address(v) for k, v in data["libraries"].items()},
                to_checksum_address(data["registrar"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError, MalformedInput) as exc:
            raise ConfigError(f"not a Cloister EVM deployment record ({exc}); deploy again or fix the file") from None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the deployment record {path} ({exc})") from None


def link(unit: dict[str, Any], addresses: dict[str, str]) -> bytes:
    """The unit's creation bytecode with each library placeholder replaced by that library's address."""
    code = bytearray.fromhex(_PLACEHOLDER.sub("0" * 40, unit["bytecode"]))
    for ref in unit["links"]:
        start = ref["start"]
        code[start : start + ref["length"]] = bytes.fromhex(addresses[ref["library"]][2:])
    return bytes(code)


def _create(sender: Sender, deployer: LocalAccount, code: bytes, what: str) -> tuple[str, int]:
    try:
        receipt = sender.send(deployer, None, code)
    except Reverted as exc:
        raise LedgerError(
            f"deploying {what} failed: {exc.message}; check the deployer has ether and the chain "
            "accepts contracts of this size"
        ) from None
    return to_checksum_address(receipt["contractAddress"]), int(receipt["blockNumber"], 16)


def deploy(sender: Sender, deployer: LocalAccount, genesis: Genesis, registrar: str) -> Deployment:
    """Deploy the libraries and the contract for ``genesis`` from ``deployer`` (which pays the gas), trusting
    ``registrar`` (an Ethereum address) to co-sign machine appraisals."""
    artifact = load_artifact()
    units = artifact["contracts"]
    libraries: dict[str, str] = {}
    for name in LIBRARIES:
        libraries[name], _ = _create(sender, deployer, link(units[name], libraries), f"library {name}")
    main = units[CONTRACT]
    constructor = next(entry for entry in main["abi"] if entry["type"] == "constructor")
    params = genesis.params
    args = abi_encode(
        [abi_type(p) for p in constructor["inputs"]],
        [
            genesis.chain_id,
            parse_digest(genesis.hash),
            genesis.time,
            (
                params.faucet_limit,
                params.heartbeat_timeout,
                params.min_provider_stake,
                params.challenge_ttl,
                params.min_serving_stake,
                params.max_replicas,
                params.dispute_slash_bps,
                params.referee_share_bps,
                params.timeout_slash_bps,
            ),
            registrar,
        ],
    )
    address, block = _create(sender, deployer, link(main, libraries) + args, CONTRACT)
    return Deployment(address, block, sender.eth_chain_id, genesis, libraries, to_checksum_address(registrar))


def deploy_to(
    url: str, deployer: LocalAccount, genesis: Genesis, registrar: str, *, gas: GasSource | None = None
) -> Deployment:
    """``cloister ledger deploy --rpc URL``: deploy to the node at ``url`` from a funded ``deployer`` key."""
    rpc = Rpc(url)
    return deploy(Sender(rpc, int(rpc.request("eth_chainId", []), 16), gas=gas), deployer, genesis, registrar)

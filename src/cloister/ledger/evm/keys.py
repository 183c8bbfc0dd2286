"""Each account's Ethereum key, and the binding that ties it to the account's Ed25519 identity.

On an EVM chain the account acts through an Ethereum address. Its secp256k1 key is derived from the account's
Ed25519 seed (HKDF-SHA256, domain-separated), so the keystore holds one secret per account and every machine
holding the account derives the same Ethereum key. At registration the Ed25519 key signs the binding
(chain, contract, Ethereum address); the EVM cannot check Ed25519, so readers do (:func:`verify_binding`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account as EthAccount
from eth_account.signers.local import LocalAccount

from cloister.crypto.canonical import canonical_json
from cloister.crypto.identity import Identity, verify_signature
from cloister.errors import InvalidSignature, KeyNotFound, MalformedInput, SignatureRejected

KEY_INFO = b"cloister/evm-key/v1"
BIND_DOMAIN = "cloister/evm-bind/v1"
_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def evm_account(identity: Identity) -> LocalAccount:
    """The Ethereum account that acts for ``identity``: the same on every machine that holds the identity."""
    seed = identity.private_bytes()[0]
    okm = HKDF(algorithm=hashes.SHA256(), length=48, salt=None, info=KEY_INFO).derive(seed)
    secret = int.from_bytes(okm, "big") % (_SECP256K1_ORDER - 1) + 1
    account: LocalAccount = EthAccount.from_key(secret.to_bytes(32, "big"))
    return account


def binding_message(chain_name: str, contract: str, eth_address: str) -> bytes:
    return canonical_json({"chain": chain_name, "contract": contract.lower(), "eth": eth_address.lower()})


def sign_binding(identity: Identity, chain_name: str, contract: str, eth_address: str) -> bytes:
    return identity.sign(BIND_DOMAIN, binding_message(chain_name, contract, eth_address))


def verify_binding(signing_key: bytes, chain_name: str, contract: str, eth_address: str, signature: bytes) -> None:
    """Raise :class:`SignatureRejected` unless the account's Ed25519 key bound this Ethereum address."""
    try:
        verify_signature(signing_key, BIND_DOMAIN, binding_message(chain_name, contract, eth_address), signature)
    except (InvalidSignature, MalformedInput):
        raise SignatureRejected(
            f"the account's key never bound Ethereum address {eth_address}: the account was registered by someone "
            "else with its public key; do not trust it, and register the identity under a new key"
        ) from None


@dataclass(frozen=True)
class Signer:
    identity: Identity
    account: LocalAccount


class Keyring:
    """The identities this client may act for, by Cloister address; safe to share between threads."""

    def __init__(self, identities: Iterable[Identity] = ()) -> None:
        self._lock = threading.Lock()
        self._signers: dict[str, Signer] = {}
        for identity in identities:
            self.add(identity)

    def add(self, identity: Identity) -> Signer:
        signer = Signer(identity, evm_account(identity))
        with self._lock:
            self._signers[identity.address] = signer
        return signer

    def signer(self, address: str) -> Signer:
        with self._lock:
            found = self._signers.get(address)
        if found is None:
            raise KeyNotFound(
                f"this client holds no key for account {address}: on an EVM ledger each sender signs its own "
                "Ethereum transactions; load the account's identity into the keyring (its keystore entry)"
            )
        return found

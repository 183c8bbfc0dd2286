"""The signed transaction envelope (DESIGN §3).

A transaction is canonical JSON ``{type, payload, sender, nonce, chain_id}``; the envelope adds the sender's
Ed25519 public key and its signature over those canonical bytes in the ``cloister/tx/v1`` domain. The
transaction hash is the digest of the same canonical bytes, so it names exactly what was signed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity, address_of, is_address, verify_signature
from cloister.errors import InvalidSignature, InvalidTransaction, MalformedInput, SignatureRejected

TX_DOMAIN = "cloister/tx/v1"
MAX_TYPE_LENGTH = 64


@dataclass(frozen=True)
class Transaction:
    """What a sender asks the ledger to do. ``payload`` is the JSON form of a typed payload."""

    type: str
    payload: dict[str, Any]
    sender: str
    nonce: int
    chain_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "payload": self.payload,
            "sender": self.sender,
            "nonce": self.nonce,
            "chain_id": self.chain_id,
        }

    def signing_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def hash(self) -> str:
        return digest_bytes(self.signing_bytes())

    @classmethod
    def from_json(cls, data: Any) -> Transaction:
        if not isinstance(data, dict) or set(data) != {"type", "payload", "sender", "nonce", "chain_id"}:
            raise InvalidTransaction("a transaction is an object with exactly type, payload, sender, nonce, chain_id")
        tx_type, payload, sender = data["type"], data["payload"], data["sender"]
        nonce, chain_id = data["nonce"], data["chain_id"]
        if not isinstance(tx_type, str) or not 0 < len(tx_type) <= MAX_TYPE_LENGTH:
            raise InvalidTransaction("transaction type must be a short non-empty string")
        if not isinstance(payload, dict):
            raise InvalidTransaction("transaction payload must be an object")
        if not is_address(sender):
            raise InvalidTransaction(f"sender {sender!r} is not an address")
        if isinstance(nonce, bool) or not isinstance(nonce, int) or nonce < 1:
            raise InvalidTransaction("nonce must be a positive integer")
        if not isinstance(chain_id, str) or not chain_id:
            raise InvalidTransaction("chain_id must be a non-empty string")
        return cls(tx_type, payload, sender, nonce, chain_id)


@dataclass(frozen=True)
class SignedTransaction:
    """A transaction with the key that signed it; :meth:`verify` checks the signature and the sender."""

    tx: Transaction
    public_key: bytes
    signature: bytes

    @classmethod
    def sign(cls, identity: Identity, tx: Transaction) -> SignedTransaction:
        if tx.sender != identity.address:
            raise InvalidTransaction("the transaction's sender is not the signing identity's address")
        return cls(tx, identity.public.signing_key, identity.sign(TX_DOMAIN, tx.signing_bytes()))

    @property
    def hash(self) -> str:
        return self.tx.hash

    def verify(self) -> None:
        """Raise :class:`SignatureRejected` unless the key derives the sender and signed these exact bytes."""
        try:
            if address_of(self.public_key) != self.tx.sender:
                raise SignatureRejected("the public key does not belong to the transaction's sender")
            verify_signature(self.public_key, TX_DOMAIN, self.tx.signing_bytes(), self.signature)
        except (InvalidSignature, MalformedInput) as exc:
            raise SignatureRejected(f"transaction signature rejected: {exc.message}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "tx": self.tx.to_json(),
            "public_key": self.public_key.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> SignedTransaction:
        if not isinstance(data, dict) or set(data) != {"tx", "public_key", "signature"}:
            raise InvalidTransaction("a signed transaction is an object with exactly tx, public_key, signature")
        try:
            public_key = bytes.fromhex(data["public_key"])
            signature = bytes.fromhex(data["signature"])
        except (TypeError, ValueError):
            raise InvalidTransaction("public_key and signature must be hex strings") from None
        if len(public_key) != 32 or len(signature) != 64:
            raise SignatureRejected("public_key must be 32 bytes and signature 64 bytes")
        return cls(Transaction.from_json(data["tx"]), public_key, signature)

"""A replica's signed commitment to one answer: which deployment, which request, which tokens, which text.

The loader signs it with its attested key, so a commitment is evidence that this machine produced this output for
this request. Two replicas' commitments are compared (verdict) and, on disagreement, carried to the ledger, which
slashes the machines that committed the losing output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from cloister.consensus.wire import (
    b64_decode,
    b64_encode,
    check_count,
    check_digest,
    check_id,
    json_object,
    malformed,
    parse_canonical,
)
from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity, address_of, verify_signature
from cloister.errors import InvalidSignature

COMMITMENT_DOMAIN = "cloister/inference-commitment/v1"
MAX_COMMITMENT = 4096
"""Largest signed commitment accepted, in bytes of canonical JSON."""
SIGNATURE_SIZE = 64
MAX_TOKEN_ID = (1 << 32) - 1

Role = Literal["selected", "referee"]
SELECTED: Final = "selected"
REFEREE: Final = "referee"
ROLES: Final[tuple[Role, ...]] = (SELECTED, REFEREE)


@dataclass(frozen=True)
class Commitment:
    """What one replica says it produced; ``deployment_id`` is the inference order id (``or-…``)."""

    deployment_id: str
    machine_id: str
    request_digest: str
    params_digest: str
    deployment_digest: str
    output_digest: str
    content_digest: str
    completion_tokens: int
    prompt_tokens: int
    role: Role
    created_at: int

    def __post_init__(self) -> None:
        check_id(self.deployment_id, "deployment id")
        check_id(self.machine_id, "machine id")
        for name in ("request_digest", "params_digest", "deployment_digest", "output_digest", "content_digest"):
            check_digest(getattr(self, name), name)
        for name in ("completion_tokens", "prompt_tokens", "created_at"):
            check_count(getattr(self, name), name)
        if self.role not in ROLES:
            malformed(f"role must be one of {', '.join(ROLES)}, got {self.role!r:.80}")

    @property
    def subject(self) -> tuple[str, str, str, str]:
        """What every commitment compared in one verdict must share: deployment, request, params, deployment."""
        return (self.deployment_id, self.request_digest, self.params_digest, self.deployment_digest)

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "machine_id": self.machine_id,
            "request_digest": self.request_digest,
            "params_digest": self.params_digest,
            "deployment_digest": self.deployment_digest,
            "output_digest": self.output_digest,
            "content_digest": self.content_digest,
            "completion_tokens": self.completion_tokens,
            "prompt_tokens": self.prompt_tokens,
            "role": self.role,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: object) -> Commitment:
        return cls(**json_object(data, "commitment", cls.__dataclass_fields__))

    def signed_bytes(self) -> bytes:
        return canonical_json(self.to_json())


@dataclass(frozen=True)
class SignedCommitment:
    """A commitment with the loader's Ed25519 signature; the signer's key comes from the ledger, not from here."""

    commitment: Commitment
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.commitment, Commitment):
            malformed("a signed commitment holds a Commitment")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            malformed(f"a commitment signature is {SIGNATURE_SIZE} bytes")

    @property
    def machine_id(self) -> str:
        return self.commitment.machine_id

    def to_json(self) -> dict[str, Any]:
        return {"commitment": self.commitment.to_json(), "signature": b64_encode(self.signature)}

    @classmethod
    def from_json(cls, data: object) -> SignedCommitment:
        f = json_object(data, "signed commitment", ("commitment", "signature"))
        return cls(Commitment.from_json(f["commitment"]), b64_decode(f["signature"], "signature", SIGNATURE_SIZE))

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def parse(cls, data: bytes) -> SignedCommitment:
        """Strictly parse :meth:`to_bytes` output; any other spelling is :class:`MalformedInput`."""
        return cls.from_json(parse_canonical(data, "a signed commitment", MAX_COMMITMENT))

    def verify(self, loader_signing_key: bytes) -> Commitment:
        """The commitment, if ``loader_signing_key`` (the machine's attested loader key) signed exactly it."""
        try:
            verify_signature(loader_signing_key, COMMITMENT_DOMAIN, self.commitment.signed_bytes(), self.signature)
        except InvalidSignature:
            raise InvalidSignature(
                f"the commitment of machine {self.commitment.machine_id} is not signed by loader key "
                f"{address_of(loader_signing_key)}: it was altered or signed by another machine; do not trust it",
                machine_id=self.commitment.machine_id,
            ) from None
        return self.commitment


def sign_commitment(identity: Identity, commitment: Commitment) -> SignedCommitment:
    """Sign ``commitment`` with the replica's loader identity."""
    return SignedCommitment(commitment, identity.sign(COMMITMENT_DOMAIN, commitment.signed_bytes()))


def deployment_digest(order_id: str, model_digest: str, adapter_digests: Sequence[str], engine_digest: str) -> str:
    """Digest naming what a replica serves: the order, base model, adapters (in stacking order), engine."""
    check_id(order_id, "order id")
    check_digest(model_digest, "model digest")
    check_digest(engine_digest, "engine digest")
    for adapter in adapter_digests:
        check_digest(adapter, "adapter digest")
    body = {"order_id": order_id, "model": model_digest, "adapters": list(adapter_digests), "engine": engine_digest}
    return digest_bytes(canonical_json(body))


def output_digest(token_ids: Sequence[int]) -> str:
    """Digest of the generated token ids, the output replicas must agree on (decoding is deterministic)."""
    for token in token_ids:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= MAX_TOKEN_ID:
            malformed(f"a token id is an integer from 0 to {MAX_TOKEN_ID}, got {token!r:.80}")
    return digest_bytes(canonical_json(list(token_ids)))


def content_digest(text: str) -> str:
    """Digest of the answer text a replica returned (UTF-8), so a user can match it to the receipt."""
    if not isinstance(text, str):
        malformed("an answer text must be a string")
    try:
        return digest_bytes(text.encode())
    except UnicodeEncodeError:
        malformed("an answer text must be valid Unicode (no lone surrogates)")

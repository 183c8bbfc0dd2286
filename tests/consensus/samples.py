"""Real signed consensus records for the tests: replicas with loader keys, commitments, receipts built by the rules.

Nothing is mocked: every commitment is signed by a replica's loader identity, every receipt by a gateway identity,
and the selection is computed with the real rule, exactly as a gateway would.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from cloister.consensus.commitment import (
    Commitment,
    Role,
    SignedCommitment,
    content_digest,
    deployment_digest,
    output_digest,
    sign_commitment,
)
from cloister.consensus.modes import parse_mode
from cloister.consensus.receipt import Receipt, ReplicaRef, SelectionInputs, SignedReceipt, sign_receipt
from cloister.consensus.requests import normalize_request
from cloister.consensus.selection import select, selection_seed
from cloister.consensus.verdict import decide
from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity

ORDER = "or-00000000000000aa"
HEAD_HEIGHT = 42
HEAD_HASH = "sha256:" + "ab" * 32
NONCE = bytes.fromhex("00112233445566778899aabbccddeeff")
ISSUED_AT = 1_700_000_000
GOOD_TOKENS = (101, 7, 42, 2)
BAD_TOKENS = (101, 7, 43, 2)
REQUEST = normalize_request(
    {"model": ORDER, "messages": [{"role": "user", "content": "What is Cloister?"}], "max_tokens": 16}
)
DEPLOYMENT = deployment_digest(ORDER, "sha256:" + "11" * 32, ["sha256:" + "22" * 32], "sha256:" + "33" * 32)


def identity(name: str) -> Identity:
    """A deterministic identity, so receipts are the same bytes on every run."""
    seed = hashlib.sha256(name.encode()).digest()
    return Identity.from_private_bytes(seed, hashlib.sha256(seed).digest())


GATEWAY = identity("gateway")


@dataclass(frozen=True)
class Replica:
    machine_id: str
    loader: Identity
    tcb_id: str

    @property
    def ref(self) -> ReplicaRef:
        return ReplicaRef(self.machine_id, self.loader.public.signing_key, self.tcb_id)

    def commit(
        self,
        tokens: tuple[int, ...] = GOOD_TOKENS,
        *,
        role: Role = "selected",
        request_digest: str = REQUEST.digest,
        text: str | None = None,
    ) -> SignedCommitment:
        answer = text if text is not None else " ".join(map(str, tokens))
        commitment = Commitment(
            deployment_id=ORDER,
            machine_id=self.machine_id,
            request_digest=request_digest,
            params_digest=REQUEST.params_digest,
            deployment_digest=DEPLOYMENT,
            output_digest=output_digest(tokens),
            content_digest=content_digest(answer),
            completion_tokens=len(tokens),
            prompt_tokens=9,
            role=role,
            created_at=ISSUED_AT,
        )
        return sign_commitment(self.loader, commitment)


REPLICAS = {
    f"mc-{i:016x}": Replica(f"mc-{i:016x}", identity(f"loader-{i}"), digest_bytes(f"tcb {i}".encode()))
    for i in range(8)
}
MACHINES = tuple(REPLICAS)


def build_receipt(
    mode: str = "sampling:3",
    *,
    faulty: frozenset[str] = frozenset(),
    nonce: bytes = NONCE,
    candidates: tuple[str, ...] = MACHINES,
    resampled: int = 0,
    timed_out: frozenset[str] = frozenset(),
    sealed_digest: str | None = None,
    replicas: Mapping[str, Replica] = REPLICAS,
    head: tuple[int, str] = (HEAD_HEIGHT, HEAD_HASH),
) -> Receipt:
    """The receipt an honest gateway issues; ``faulty`` machines commit another output than the rest."""
    seed = selection_seed(head[1], sealed_digest or REQUEST.digest, nonce)
    selection = select(seed, candidates, parse_mode(mode))
    spares = tuple(selection.resample(i) for i in range(resampled))
    commitments = []
    for machine in selection.selected + selection.referees + spares:
        if machine in timed_out:
            continue
        tokens = BAD_TOKENS if machine in faulty else GOOD_TOKENS
        role: Role = "referee" if machine in selection.referees else "selected"
        commitments.append(replicas[machine].commit(tokens, role=role))
    verdict = decide([signed.commitment for signed in commitments])
    return Receipt(
        receipt_id="rc-00000000000000a1",
        deployment_id=ORDER,
        request_digest=REQUEST.digest,
        content_digest=content_digest(" ".join(map(str, GOOD_TOKENS))),
        mode=str(parse_mode(mode)),
        selection=SelectionInputs(
            head_height=head[0],
            head_hash=head[1],
            client_nonce=nonce,
            candidates=tuple(sorted(candidates)),
            selected=selection.selected,
            referees=selection.referees,
            cross_triggered=selection.cross_triggered,
            resampled=spares,
            sealed_digest=sealed_digest,
        ),
        replicas=tuple(replicas[m].ref for m in selection.selected + selection.referees + spares),
        commitments=tuple(commitments),
        verdict=verdict,
        dispute_id=None if verdict.agreed else "dp-00000000000000d1",
        gateway=GATEWAY.address,
        issued_at=ISSUED_AT,
    )


def signed(receipt: Receipt, gateway: Identity = GATEWAY) -> SignedReceipt:
    return sign_receipt(gateway, receipt)


def replace(receipt: Receipt, **changes: object) -> Receipt:
    return dataclasses.replace(receipt, **changes)  # type: ignore[arg-type]

"""Receipts: the gateway's signed account of how one answer was produced, checkable offline by anyone.

A receipt holds the selection inputs (ledger head, request digest, client nonce, candidates), who was selected,
every replica's signed commitment and the verdict. A verifier recomputes the selection, checks each commitment
against its replica's attested loader key, recomputes the verdict and matches the answer's digest, so a gateway
can neither steer a request to chosen replicas nor claim an agreement that did not happen.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from cloister.attest.checks import Checklist
from cloister.attest.tcb import Tcb
from cloister.consensus.commitment import Commitment, SignedCommitment
from cloister.consensus.modes import parse_mode
from cloister.consensus.selection import MAX_CANDIDATES, MAX_NONCE, select, selection_seed
from cloister.consensus.verdict import Verdict, decide
from cloister.consensus.wire import (
    b64_decode,
    b64_encode,
    check_bytes,
    check_count,
    check_digest,
    check_flag,
    check_id,
    check_ids,
    check_text,
    hex_decode,
    json_list,
    json_object,
    malformed,
    parse_canonical,
)
from cloister.crypto.canonical import canonical_json
from cloister.crypto.identity import Identity, address_of, is_address, verify_signature
from cloister.errors import (
    BindingMismatch,
    CloisterError,
    DigestMismatch,
    InvalidSignature,
    MalformedInput,
    RecordNotFound,
    SelectionMismatch,
    VerdictMismatch,
)

RECEIPT_DOMAIN = "cloister/receipt/v1"
MAX_RECEIPT = 1 << 20
"""Largest signed receipt accepted, in bytes of canonical JSON."""
KEY_SIZE = 32
SIGNATURE_SIZE = 64
RECEIPT_ID_PREFIX = "rc-"
DISPUTE_ID_PREFIX = "dp-"
_RECEIPT_ID_RE = re.compile(r"^rc-[0-9a-f]{16}$")


def new_receipt_id() -> str:
    """A fresh ``rc-<16 hex>`` id."""
    return RECEIPT_ID_PREFIX + os.urandom(8).hex()


@dataclass(frozen=True)
class SelectionInputs:
    """Everything needed to recompute who ran the request.

    ``sealed_digest`` is set for sealed requests: the gateway cannot read those, so their selection is seeded by
    the digest of the sealed bytes (which the client holds) instead of the request digest.
    """

    head_height: int
    head_hash: str
    client_nonce: bytes
    candidates: tuple[str, ...]
    selected: tuple[str, ...]
    referees: tuple[str, ...]
    cross_triggered: bool
    resampled: tuple[str, ...]
    sealed_digest: str | None = None

    def __post_init__(self) -> None:
        check_count(self.head_height, "selection.head_height")
        check_text(self.head_hash, "selection.head_hash")
        check_bytes(self.client_nonce, "selection.client_nonce", 1, MAX_NONCE)
        for name in ("candidates", "selected", "referees", "resampled"):
            check_ids(getattr(self, name), f"selection.{name}", MAX_CANDIDATES)
        if list(self.candidates) != sorted(self.candidates):
            malformed("selection.candidates must be sorted")
        if not set(self.involved) <= set(self.candidates):
            malformed("every selected, referee and re-sampled machine must be a candidate")
        if len(set(self.involved)) != len(self.involved):
            malformed("a machine is at most one of selected, referee and re-sampled")
        check_flag(self.cross_triggered, "selection.cross_triggered")
        if self.sealed_digest is not None:
            check_digest(self.sealed_digest, "selection.sealed_digest")

    @property
    def involved(self) -> tuple[str, ...]:
        """Every machine asked to run the request, in the order they were asked."""
        return self.selected + self.referees + self.resampled

    def to_json(self) -> dict[str, Any]:
        return {
            "head_height": self.head_height,
            "head_hash": self.head_hash,
            "client_nonce": self.client_nonce.hex(),
            "candidates": list(self.candidates),
            "selected": list(self.selected),
            "referees": list(self.referees),
            "cross_triggered": self.cross_triggered,
            "resampled": list(self.resampled),
            "sealed_digest": self.sealed_digest,
        }

    @classmethod
    def from_json(cls, data: object) -> SelectionInputs:
        f = json_object(data, "selection", cls.__dataclass_fields__)
        ids = {
            name: tuple(json_list(f[name], f"selection.{name}", MAX_CANDIDATES))
            for name in ("candidates", "selected", "referees", "resampled")
        }
        return cls(
            head_height=f["head_height"],
            head_hash=f["head_hash"],
            client_nonce=hex_decode(f["client_nonce"], "selection.client_nonce", 1, MAX_NONCE),
            cross_triggered=f["cross_triggered"],
            sealed_digest=f["sealed_digest"],
            **ids,
        )


@dataclass(frozen=True)
class ReplicaRef:
    """A replica as the gateway knew it: machine, attested loader key, TCB id (digest of its TCB)."""

    machine_id: str
    loader_signing_key: bytes
    tcb_id: str

    def __post_init__(self) -> None:
        check_id(self.machine_id, "replica machine id")
        check_bytes(self.loader_signing_key, f"loader key of {self.machine_id}", KEY_SIZE, KEY_SIZE)
        check_digest(self.tcb_id, f"TCB id of {self.machine_id}")

    def to_json(self) -> dict[str, Any]:
        return {
            "machine_id": self.machine_id,
            "loader_signing_key": self.loader_signing_key.hex(),
            "tcb_id": self.tcb_id,
        }

    @classmethod
    def from_json(cls, data: object) -> ReplicaRef:
        f = json_object(data, "replica", ("machine_id", "loader_signing_key", "tcb_id"))
        return cls(
            f["machine_id"], hex_decode(f["loader_signing_key"], "loader_signing_key", KEY_SIZE, KEY_SIZE), f["tcb_id"]
        )


@dataclass(frozen=True)
class Receipt:
    """One answer's receipt; ``content_digest`` is the digest of the answer text the user received."""

    receipt_id: str
    deployment_id: str
    request_digest: str
    content_digest: str
    mode: str
    selection: SelectionInputs
    replicas: tuple[ReplicaRef, ...]
    commitments: tuple[SignedCommitment, ...]
    verdict: Verdict
    dispute_id: str | None
    gateway: str
    issued_at: int

    def __post_init__(self) -> None:
        if not isinstance(self.receipt_id, str) or not _RECEIPT_ID_RE.match(self.receipt_id):
            malformed(f"a receipt id is rc- and 16 hex digits, got {self.receipt_id!r:.40}")
        check_id(self.deployment_id, "deployment id")
        check_digest(self.request_digest, "request_digest")
        check_digest(self.content_digest, "content_digest")
        self._check_mode()
        if not isinstance(self.selection, SelectionInputs) or not isinstance(self.verdict, Verdict):
            malformed("a receipt holds SelectionInputs and a Verdict")
        self._check_replicas()
        if self.dispute_id is not None:
            check_id(self.dispute_id, "dispute id")
            if not self.dispute_id.startswith(DISPUTE_ID_PREFIX):
                malformed(f"a dispute id starts with {DISPUTE_ID_PREFIX}, got {self.dispute_id!r:.40}")
        if not is_address(self.gateway):
            malformed(f"the receipt's gateway must be a ledger address, got {self.gateway!r:.60}")
        check_count(self.issued_at, "issued_at")

    def _check_mode(self) -> None:
        try:
            canonical = str(parse_mode(self.mode))
        except CloisterError as exc:
            malformed(f"the receipt's mode is not a consensus mode ({exc.message})")
        if canonical != self.mode:
            malformed(f"the receipt's mode must be written {canonical!r}, not {self.mode!r:.40}")

    def _check_replicas(self) -> None:
        if not isinstance(self.replicas, tuple) or not all(isinstance(r, ReplicaRef) for r in self.replicas):
            malformed("a receipt's replicas are a tuple of ReplicaRef")
        machines = [replica.machine_id for replica in self.replicas]
        if len(set(machines)) != len(machines) or set(machines) != set(self.selection.involved):
            malformed("a receipt lists each selected, referee and re-sampled machine exactly once as a replica")
        if not isinstance(self.commitments, tuple) or not 0 < len(self.commitments) <= 2 * MAX_CANDIDATES:
            malformed("a receipt holds at least one commitment")
        for signed in self.commitments:
            if not isinstance(signed, SignedCommitment) or signed.machine_id not in machines:
                malformed("every commitment of a receipt is by one of its replicas")

    @property
    def replica_keys(self) -> dict[str, bytes]:
        return {replica.machine_id: replica.loader_signing_key for replica in self.replicas}

    def to_json(self) -> dict[str, Any]:
        return {
            "receipt_id": self.receipt_id,
            "deployment_id": self.deployment_id,
            "request_digest": self.request_digest,
            "content_digest": self.content_digest,
            "mode": self.mode,
            "selection": self.selection.to_json(),
            "replicas": [replica.to_json() for replica in self.replicas],
            "commitments": [signed.to_json() for signed in self.commitments],
            "verdict": self.verdict.to_json(),
            "dispute_id": self.dispute_id,
            "gateway": self.gateway,
            "issued_at": self.issued_at,
        }

    @classmethod
    def from_json(cls, data: object) -> Receipt:
        f = json_object(data, "receipt", cls.__dataclass_fields__)
        replicas = json_list(f["replicas"], "replicas", MAX_CANDIDATES)
        commitments = json_list(f["commitments"], "commitments", 2 * MAX_CANDIDATES)
        return cls(
            receipt_id=f["receipt_id"],
            deployment_id=f["deployment_id"],
            request_digest=f["request_digest"],
            content_digest=f["content_digest"],
            mode=f["mode"],
            selection=SelectionInputs.from_json(f["selection"]),
            replicas=tuple(ReplicaRef.from_json(item) for item in replicas),
            commitments=tuple(SignedCommitment.from_json(item) for item in commitments),
            verdict=Verdict.from_json(f["verdict"]),
            dispute_id=f["dispute_id"],
            gateway=f["gateway"],
            issued_at=f["issued_at"],
        )

    def signed_bytes(self) -> bytes:
        return canonical_json(self.to_json())


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt with the gateway's key and Ed25519 signature; publish :meth:`to_bytes`."""

    receipt: Receipt
    gateway_key: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.receipt, Receipt):
            malformed("a signed receipt holds a Receipt")
        check_bytes(self.gateway_key, "gateway_key", KEY_SIZE, KEY_SIZE)
        check_bytes(self.signature, "signature", SIGNATURE_SIZE, SIGNATURE_SIZE)

    def to_json(self) -> dict[str, Any]:
        return {
            "receipt": self.receipt.to_json(),
            "gateway_key": self.gateway_key.hex(),
            "signature": b64_encode(self.signature),
        }

    @classmethod
    def from_json(cls, data: object) -> SignedReceipt:
        f = json_object(data, "signed receipt", ("receipt", "gateway_key", "signature"))
        return cls(
            Receipt.from_json(f["receipt"]),
            hex_decode(f["gateway_key"], "gateway_key", KEY_SIZE, KEY_SIZE),
            b64_decode(f["signature"], "signature", SIGNATURE_SIZE),
        )

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def parse(cls, data: bytes) -> SignedReceipt:
        """Strictly parse :meth:`to_bytes` output; any other spelling is :class:`MalformedInput`."""
        return cls.from_json(parse_canonical(data, "a signed receipt", MAX_RECEIPT))


def sign_receipt(identity: Identity, receipt: Receipt) -> SignedReceipt:
    """Sign ``receipt`` with the gateway's account identity, which must be the receipt's ``gateway``."""
    if identity.address != receipt.gateway:
        malformed(f"the receipt names gateway {receipt.gateway} but is being signed by {identity.address}")
    signature = identity.sign(RECEIPT_DOMAIN, receipt.signed_bytes())
    return SignedReceipt(receipt, identity.public.signing_key, signature)


@dataclass(frozen=True)
class ReceiptVerifyOptions:
    """What the verifier already trusts: the gateway's key, the replicas (from the ledger), ledger head hashes."""

    gateway_key: bytes | None = None
    replicas: Mapping[str, ReplicaRef] | None = None
    head_hashes: Mapping[int, str] | None = None


class MachineRecord(Protocol):
    """What a ledger's machine record tells a verifier (``cloister.ledger.records.Machine`` fits)."""

    @property
    def machine_id(self) -> str: ...
    @property
    def loader_signing_key(self) -> bytes: ...
    @property
    def tcb_evidence(self) -> bytes: ...


class LedgerView(Protocol):
    """The two ledger reads a receipt is checked against (every ``cloister.ledger`` backend fits)."""

    def machine(self, machine_id: str) -> MachineRecord: ...
    def block_hash(self, height: int) -> str: ...


def trust_from_ledger(ledger: LedgerView, data: bytes, gateway_key: bytes | None = None) -> ReceiptVerifyOptions:
    """Options pinning the receipt's replicas (loader key, TCB id) and seeding block hash to what the ledger records.

    A machine or block the ledger does not know is left out, so its check fails and says so; bytes that do not
    parse get no ledger options, and the format check reports them.
    """
    try:
        receipt = SignedReceipt.parse(data).receipt
    except MalformedInput:
        return ReceiptVerifyOptions(gateway_key=gateway_key)
    replicas: dict[str, ReplicaRef] = {}
    for replica in receipt.replicas:
        try:
            machine = ledger.machine(replica.machine_id)
        except RecordNotFound:
            continue
        tcb_id = Tcb.from_bytes(machine.tcb_evidence).digest
        replicas[replica.machine_id] = ReplicaRef(replica.machine_id, machine.loader_signing_key, tcb_id)
    height = receipt.selection.head_height
    head_hashes: dict[int, str] = {}
    with suppress(RecordNotFound):
        head_hashes[height] = ledger.block_hash(height)
    return ReceiptVerifyOptions(gateway_key=gateway_key, replicas=replicas, head_hashes=head_hashes)


@dataclass(frozen=True)
class ReceiptCheck:
    """A receipt that passed every check, with the checklist of what was proven."""

    receipt: Receipt
    checklist: Checklist


def verify_receipt(
    data: bytes, options: ReceiptVerifyOptions | None = None, *, checklist: Checklist | None = None
) -> ReceiptCheck:
    """Check a signed receipt offline; the first failed check raises a typed error whose ``check`` names it."""
    options = options if options is not None else ReceiptVerifyOptions()
    checklist = checklist if checklist is not None else Checklist()
    with checklist.run("format", "canonical JSON {receipt, gateway_key, signature}, every field well-formed"):
        signed = SignedReceipt.parse(data)
    receipt = signed.receipt
    with checklist.run("gateway signature", f"Ed25519 by gateway {receipt.gateway}, domain {RECEIPT_DOMAIN}"):
        _check_gateway(signed, options.gateway_key)
    if options.replicas is not None:
        with checklist.run("replicas", f"{len(receipt.replicas)} replicas' loader keys and TCB ids as trusted"):
            _check_replicas(receipt, options.replicas)
    if options.head_hashes is not None:
        with checklist.run("head", f"ledger block {receipt.selection.head_height} has hash the receipt names"):
            _check_head(receipt.selection, options.head_hashes)
    with checklist.run("selection", f"{receipt.mode}: recomputed from head hash, request digest and client nonce"):
        _check_selection(receipt)
    with checklist.run("commitments", f"{len(receipt.commitments)} commitments signed by their replicas' loaders"):
        commitments = _check_commitments(receipt)
    with checklist.run("verdict", _verdict_text(receipt.verdict)):
        if decide(commitments) != receipt.verdict:
            raise VerdictMismatch(
                f"the receipt's verdict is not what its commitments decide ({decide(commitments).to_json()}); "
                "the gateway misreported the agreement: do not trust this answer"
            )
    with checklist.run("content", f"the answer's digest {receipt.content_digest} is the one the majority committed"):
        _check_content(receipt, commitments)
    return ReceiptCheck(receipt, checklist)


def _check_gateway(signed: SignedReceipt, pinned: bytes | None) -> None:
    receipt = signed.receipt
    if address_of(signed.gateway_key) != receipt.gateway:
        raise InvalidSignature(f"the receipt's key is not gateway {receipt.gateway}'s; do not trust it")
    if pinned is not None and signed.gateway_key != pinned:
        raise InvalidSignature(
            f"the receipt is signed by gateway {receipt.gateway}, not by the gateway you pinned "
            f"({address_of(pinned)}); check which gateway issued it"
        )
    try:
        verify_signature(signed.gateway_key, RECEIPT_DOMAIN, receipt.signed_bytes(), signed.signature)
    except InvalidSignature:
        raise InvalidSignature(
            "the receipt's signature does not verify: it was altered after the gateway signed it; do not trust it"
        ) from None


def _check_replicas(receipt: Receipt, trusted: Mapping[str, ReplicaRef]) -> None:
    for replica in receipt.replicas:
        known = trusted.get(replica.machine_id)
        if known is None:
            raise BindingMismatch(f"machine {replica.machine_id} named by the receipt is not a replica you trust")
        if known.loader_signing_key != replica.loader_signing_key or known.tcb_id != replica.tcb_id:
            raise BindingMismatch(
                f"the receipt gives machine {replica.machine_id} another loader key or TCB than the ledger "
                "records; do not trust it"
            )


def _check_head(selection: SelectionInputs, head_hashes: Mapping[int, str]) -> None:
    known = head_hashes.get(selection.head_height)
    if known != selection.head_hash:
        raise BindingMismatch(
            f"the receipt says ledger block {selection.head_height} has hash {selection.head_hash}, the ledger "
            f"says {known}; the selection was seeded with a head that is not the ledger's"
        )


def _check_selection(receipt: Receipt) -> None:
    inputs = receipt.selection
    seed = selection_seed(inputs.head_hash, inputs.sealed_digest or receipt.request_digest, inputs.client_nonce)
    try:
        expected = select(seed, inputs.candidates, parse_mode(receipt.mode))
    except CloisterError as exc:
        raise SelectionMismatch(f"the selection cannot be recomputed: {exc.message}") from None
    resampled = expected.spares[: len(inputs.resampled)]
    if (expected.selected, expected.cross_triggered, expected.referees, resampled) != (
        inputs.selected,
        inputs.cross_triggered,
        inputs.referees,
        inputs.resampled,
    ):
        raise SelectionMismatch(
            f"the receipt names selected {list(inputs.selected)}, referees {list(inputs.referees)}, re-sampled "
            f"{list(inputs.resampled)}, but the selection rule chooses {list(expected.selected)}, "
            f"{list(expected.referees)}, {list(resampled)}: the gateway steered the request; do not trust it"
        )


def _check_commitments(receipt: Receipt) -> list[Commitment]:
    keys = receipt.replica_keys
    commitments = [signed.verify(keys[signed.machine_id]) for signed in receipt.commitments]
    subject = commitments[0].subject
    for commitment in commitments:
        if (commitment.deployment_id, commitment.request_digest) != (receipt.deployment_id, receipt.request_digest):
            raise BindingMismatch(
                f"machine {commitment.machine_id} committed to request {commitment.request_digest} of "
                f"{commitment.deployment_id}, not to this receipt's; it is replayed from another request"
            )
        if commitment.subject != subject:
            raise BindingMismatch(
                f"machine {commitment.machine_id} committed under other decoding parameters or another deployment "
                "digest than the others; the commitments cannot be compared"
            )
    return commitments


def _check_content(receipt: Receipt, commitments: list[Commitment]) -> None:
    majority = set(receipt.verdict.majority)
    if majority:
        texts = {c.content_digest for c in commitments if c.machine_id in majority}
        if texts != {receipt.content_digest}:
            raise DigestMismatch(
                f"the answer's digest {receipt.content_digest} is not the text the majority committed "
                f"({', '.join(sorted(texts))}); the answer was altered"
            )
    elif receipt.content_digest not in {c.content_digest for c in commitments}:
        raise DigestMismatch(f"no replica committed the answer {receipt.content_digest}; the answer was altered")


def _verdict_text(verdict: Verdict) -> str:
    if verdict.agreed:
        return f"all {len(verdict.majority)} replicas agree"
    if verdict.output_digest is None:
        return "no strict majority: the answer is not confirmed"
    return f"majority {', '.join(verdict.majority)}; dissenters {', '.join(verdict.dissenters)}"

"""Orders from the developer's side: create one, fetch and open its results, and verify its report and manifest.

Verification runs the chain of trust as one checklist: the machine's TCB from the ledger is appraised (vendor
root → evidence → policy), which yields the loader key; the report's signature must be that key's, its order
and digest must be the ledger's, and its engine and inputs must be the content the order's offers name. A
manifest is checked against the same loader key, against the report's outputs and against the manifest digest
the order completed with on the ledger. The delivery itself is found through the URI on the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloister.attest.checks import Checklist
from cloister.attest.der import Certificate
from cloister.attest.policy import AppraisalPolicy
from cloister.attest.tcb import Tcb, appraise
from cloister.client.sdk import Client, _created_id
from cloister.errors import BindingMismatch, DigestMismatch, InvalidState, MalformedInput, NotAuthorized
from cloister.ledger.protocol import LedgerReader
from cloister.ledger.records import COMPLETED, FINETUNE, Machine, Order
from cloister.ledger.transactions import CreateOrder, ReassignOrder
from cloister.node.delivery import Delivery, fetch_delivery
from cloister.provenance.dsse import Envelope
from cloister.provenance.report import OrderReport, verify_report
from cloister.provenance.statement import ProvenanceManifest, manifest_digest, verify_manifest
from cloister.runtime.results import open_result

Roots = Mapping[str, Sequence[Certificate]] | None


def create_order(
    client: Client,
    *,
    model: str,
    datasets: Sequence[str],
    engine: str,
    compute: str | None = None,
    params: Mapping[str, Any],
    lease_hours: int,
    deposit: int,
) -> Order:
    """Escrow ``deposit`` and create a fine-tuning order; the ledger assigns its machine."""
    payload = CreateOrder(FINETUNE, model, tuple(datasets), engine, compute, dict(params), lease_hours, 1, deposit)
    receipt = client.wallet.send(payload)
    return client.ledger.order(_created_id(receipt, "order.created", "order_id"))


def reassign_order(client: Client, order_id: str, machine_id: str | None = None) -> Order:
    """Move ``order_id`` off ``machine_id`` (default: its only machine), which must have stopped heart-beating.

    Anyone may send it; the contract checks the heartbeat timeout, pays the silent machine its recorded usage
    and assigns another machine, whose keepers then grant (the order owner's keeper re-grants the checkpoint).
    """
    order = client.ledger.order(order_id)
    if machine_id is None:
        if len(order.machines) != 1:
            raise InvalidState(
                f"order {order_id} runs on machines {', '.join(order.machines)}; name the silent one to move it off"
            )
        machine_id = order.machines[0]
    client.wallet.send(ReassignOrder(order_id, machine_id))
    return client.ledger.order(order_id)


@dataclass(frozen=True)
class VerifiedOrder:
    """A report (and manifest) that passed every check, with the checklist that shows how."""

    order: Order
    machine: Machine
    report: OrderReport
    manifest: ProvenanceManifest | None
    checklist: Checklist


def _machine_tcb(
    ledger: LedgerReader, machine_id: str, policy: AppraisalPolicy, roots: Roots, checklist: Checklist
) -> tuple[Machine, Tcb]:
    """The machine and its TCB, appraised with the verifier's policy and roots (checks land in ``checklist``)."""
    machine = ledger.machine(machine_id)
    tcb = Tcb.from_bytes(machine.tcb_evidence)
    appraise(tcb, policy, now=None, expected_nonce=tcb.nonce, roots_by_platform=roots, checklist=checklist)
    with checklist.run("loader key", f"machine {machine_id} registered the key its TCB binds"):
        if tcb.loader.signing_key != machine.loader_signing_key:
            raise BindingMismatch(f"machine {machine_id}'s record names another loader key than its TCB binds")
    return machine, tcb


def _peek(data: bytes, *path: str) -> str:
    """An unverified field, only to find which machine's key to verify with."""
    try:
        value: Any = json.loads(data)
        for name in path:
            value = value[name]
    except (ValueError, KeyError, TypeError):
        raise MalformedInput(f"not a signed Cloister record (no {'.'.join(path)}); check the file") from None
    if not isinstance(value, str):
        raise MalformedInput(f"{'.'.join(path)} is not a string; the record is malformed")
    return value


def verify_order_report(
    ledger: LedgerReader,
    report_bytes: bytes,
    *,
    policy: AppraisalPolicy,
    roots: Roots = None,
    manifest_bytes: bytes | None = None,
    checklist: Checklist | None = None,
) -> VerifiedOrder:
    """Check a signed report (and optionally its manifest) against the ledger; raise naming the failed check."""
    checklist = checklist if checklist is not None else Checklist()
    order = ledger.order(_peek(report_bytes, "report", "order_id"))
    machine_id = _peek(report_bytes, "report", "machine_id")
    with checklist.run("assigned", f"machine {machine_id} is assigned to order {order.order_id}"):
        if machine_id not in order.machines:
            raise BindingMismatch(f"machine {machine_id} is not assigned to order {order.order_id}; do not trust it")
    machine, tcb = _machine_tcb(ledger, machine_id, policy, roots, checklist)
    if order.report_digest is None:
        raise InvalidState(f"order {order.order_id} is {order.state} and has no report on the ledger yet")
    report = verify_report(
        report_bytes,
        loader_public_key=tcb.loader.signing_key,
        expected_order_id=order.order_id,
        expected_digest=order.report_digest,
        checklist=checklist,
    )
    with checklist.run("tcb", f"the report names the machine's TCB {tcb.digest}"):
        if report.tcb_id != tcb.digest:
            raise BindingMismatch(f"the report names TCB {report.tcb_id}, not machine {machine_id}'s {tcb.digest}")
    with checklist.run("offers", "engine and input digests match the order's offers"):
        named = {ref.offer_id: ref.digest for ref in (report.engine, *report.inputs)}
        for offer_id in order.content_offers:
            expected = ledger.offer(offer_id).content_digest
            if named.get(offer_id) != expected:
                raise DigestMismatch(
                    f"the report says offer {offer_id} had content {named.get(offer_id)}, the ledger {expected}; "
                    "do not trust this report"
                )
    manifest = None
    if manifest_bytes is not None:
        manifest = _check_manifest(manifest_bytes, tcb, order, report, checklist)
    return VerifiedOrder(order, machine, report, manifest, checklist)


def _manifest_on_ledger(data: bytes, order: Order, checklist: Checklist) -> None:
    with checklist.run("manifest digest", f"the manifest is the one order {order.order_id} completed with"):
        if order.manifest_digest is None:
            raise InvalidState(f"order {order.order_id} is {order.state} and has no manifest digest on the ledger")
        got = manifest_digest(data)
        if got != order.manifest_digest:
            raise DigestMismatch(
                f"the manifest's digest is {got}, the ledger's {order.manifest_digest}; do not trust this manifest"
            )


def _check_manifest(
    data: bytes, tcb: Tcb, order: Order, report: OrderReport, checklist: Checklist
) -> ProvenanceManifest:
    manifest = verify_manifest(
        data, loader_public_key=tcb.loader.signing_key, expected_order_id=order.order_id, checklist=checklist
    )
    _manifest_on_ledger(data, order, checklist)
    with checklist.run("manifest subjects", "every subject is an output of the report on the ledger"):
        outputs = {(o.name, o.digest) for o in report.outputs}
        if not {(s.name, s.digest) for s in manifest.subjects} <= outputs:
            raise DigestMismatch("the manifest's subjects are not the outputs of the order's report; do not trust it")
    with checklist.run("manifest inputs", "base model, datasets and engine are the report's"):
        predicate = manifest.predicate
        if (predicate.engine, (predicate.base_model, *predicate.datasets)) != (report.engine, report.inputs):
            raise DigestMismatch("the manifest names other inputs than the order's report; do not trust it")
    return manifest


def verify_manifest_file(
    ledger: LedgerReader,
    manifest_bytes: bytes,
    *,
    policy: AppraisalPolicy,
    roots: Roots = None,
    checklist: Checklist | None = None,
) -> ProvenanceManifest:
    """Check a manifest file alone: its machine's TCB and signature, its inputs against the order's offers, and
    its digest against the one the order completed with; :func:`verify_order_report` also ties it to the report.
    """
    checklist = checklist if checklist is not None else Checklist()
    payload = Envelope.parse(manifest_bytes).payload
    order = ledger.order(_peek(payload, "predicate", "order_id"))
    machine_id = _peek(payload, "predicate", "machine_id")
    with checklist.run("assigned", f"machine {machine_id} is assigned to order {order.order_id}"):
        if machine_id not in order.machines:
            raise BindingMismatch(f"machine {machine_id} is not assigned to order {order.order_id}; do not trust it")
    _, tcb = _machine_tcb(ledger, machine_id, policy, roots, checklist)
    manifest = verify_manifest(
        manifest_bytes, loader_public_key=tcb.loader.signing_key, expected_order_id=order.order_id, checklist=checklist
    )
    with checklist.run("offers", "base model, dataset and engine digests match the order's offers"):
        predicate = manifest.predicate
        for ref in (predicate.base_model, *predicate.datasets, predicate.engine):
            if ref.offer_id not in order.content_offers or ledger.offer(ref.offer_id).content_digest != ref.digest:
                raise DigestMismatch(f"the manifest's {ref.offer_id} is not the order's offer content; do not trust it")
    with checklist.run("order state", f"order {order.order_id} completed with a report on the ledger"):
        if order.state != COMPLETED or order.report_digest is None:
            raise InvalidState(f"order {order.order_id} is {order.state}; a manifest counts only for a completed order")
    _manifest_on_ledger(manifest_bytes, order, checklist)
    return manifest


@dataclass(frozen=True)
class OrderResult:
    """The opened outputs of an order, with the verified report and manifest they came with."""

    verified: VerifiedOrder
    files: tuple[Path, ...]


def fetch_result(
    client: Client, order_id: str, dest: Path, *, policy: AppraisalPolicy, roots: Roots = None
) -> OrderResult:
    """Verify the delivery the ledger names for the order, then download and open every output into ``dest``.

    Only the order owner can: the output keys are sealed to the owner's account key. The signed report and
    manifest are saved next to the outputs as ``report.json`` and ``manifest.json``.
    """
    order = client.ledger.order(order_id)
    if order.owner != client.address:
        raise NotAuthorized(f"order {order_id} belongs to {order.owner}; only its owner's account can open its results")
    if order.state != COMPLETED:
        raise InvalidState(f"order {order_id} is {order.state}; results exist only once it is completed")
    delivery: Delivery = fetch_delivery(client.store, order)
    verified = verify_order_report(
        client.ledger, delivery.report, policy=policy, roots=roots, manifest_bytes=delivery.manifest
    )
    files = []
    for output in verified.report.outputs:
        sealed = delivery.result_keys.get(output.name)
        if sealed is None:
            raise MalformedInput(f"the delivery of order {order_id} has no key for output {output.name!r}")
        files.append(open_result(client.store, output, sealed, client.identity, order_id=order_id, dest_dir=Path(dest)))
    (Path(dest) / "report.json").write_bytes(delivery.report)
    if delivery.manifest is not None:
        (Path(dest) / "manifest.json").write_bytes(delivery.manifest)
    return OrderResult(verified, tuple(files))

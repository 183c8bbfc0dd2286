"""Receipts: honest ones verify in every mode; any altered byte, steered selection or false verdict is caught.

Tampering comes in two kinds: bytes changed after signing (caught by the format or the gateway signature), and a
dishonest gateway that signs a receipt that does not hold together (caught by recomputing selection, commitments,
verdict and answer digest).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from tests.consensus.samples import (
    GATEWAY,
    HEAD_HASH,
    HEAD_HEIGHT,
    MACHINES,
    NONCE,
    REPLICAS,
    REQUEST,
    build_receipt,
    identity,
    replace,
    signed,
)

from cloister.consensus.modes import parse_mode
from cloister.consensus.receipt import (
    Receipt,
    ReceiptVerifyOptions,
    ReplicaRef,
    SelectionInputs,
    SignedReceipt,
    new_receipt_id,
    sign_receipt,
    verify_receipt,
)
from cloister.consensus.selection import select, selection_seed
from cloister.consensus.verdict import decide
from cloister.crypto.digest import digest_bytes
from cloister.errors import (
    BindingMismatch,
    CloisterError,
    DigestMismatch,
    InvalidSignature,
    MalformedInput,
    SelectionMismatch,
    VerdictMismatch,
)

ALL_CHECKS = ["format", "gateway signature", "selection", "commitments", "verdict", "content"]


def failed_check(data: bytes, options: ReceiptVerifyOptions | None = None) -> tuple[str, CloisterError]:
    with pytest.raises(CloisterError) as caught:
        verify_receipt(data, options)
    return str(caught.value.details["check"]), caught.value


@pytest.mark.parametrize("mode", ["single", "sampling:3", "cross:1,2", "cross:0,2", "obfuscated:2", "sampling:8"])
def test_honest_receipts_verify_in_every_mode(mode: str) -> None:
    receipt = build_receipt(mode)
    check = verify_receipt(signed(receipt).to_bytes())
    assert check.receipt == receipt
    assert [item.name for item in check.checklist.items] == ALL_CHECKS and check.checklist.ok
    assert receipt.verdict.agreed and len(receipt.commitments) == parse_mode(mode).max_replicas - (
        2 if mode == "cross:0,2" else 0
    )


def test_round_trips() -> None:
    data = signed(build_receipt()).to_bytes()
    parsed = SignedReceipt.parse(data)
    assert parsed.to_bytes() == data
    assert SignedReceipt.from_json(json.loads(data)) == parsed
    assert Receipt.from_json(parsed.receipt.to_json()) == parsed.receipt


def test_a_caught_liar_is_in_the_receipt() -> None:
    receipt = build_receipt("sampling:3", faulty=frozenset({select_order()[1]}))
    check = verify_receipt(signed(receipt).to_bytes())
    verdict = check.receipt.verdict
    assert not verdict.agreed and verdict.dissenters == (select_order()[1],) and len(verdict.majority) == 2
    assert check.receipt.dispute_id == "dp-00000000000000d1"


def test_timeouts_are_resampled_from_the_seeded_order() -> None:
    first = select_order()[0]
    receipt = build_receipt("sampling:3", resampled=1, timed_out=frozenset({first}))
    assert receipt.selection.resampled == (select_order()[3],)
    verify_receipt(signed(receipt).to_bytes())
    # re-sampling any other spare than the next one in the order is steering
    other_spare = select_order()[4]
    kept = [c for c in receipt.commitments if c.machine_id != select_order()[3]]
    steered = replace(
        receipt,
        selection=dataclasses.replace(receipt.selection, resampled=(other_spare,)),
        replicas=tuple(REPLICAS[m].ref for m in (*receipt.selection.selected, other_spare)),
        commitments=(*kept, REPLICAS[other_spare].commit()),
    )
    check, error = failed_check(signed(steered).to_bytes())
    assert check == "selection" and isinstance(error, SelectionMismatch)


def test_sealed_requests_are_seeded_by_the_sealed_digest() -> None:
    sealed_digest = digest_bytes(b"the sealed bytes the client sent")
    receipt = build_receipt("sampling:3", sealed_digest=sealed_digest)
    verify_receipt(signed(receipt).to_bytes())
    unsealed = replace(receipt, selection=dataclasses.replace(receipt.selection, sealed_digest=None))
    assert failed_check(signed(unsealed).to_bytes())[0] == "selection"


def select_order() -> tuple[str, ...]:
    return select(selection_seed(HEAD_HASH, REQUEST.digest, NONCE), MACHINES, parse_mode("single")).order


# --- bytes changed after signing ---------------------------------------------------------------------------


def test_every_byte_flip_fails_at_format_or_signature() -> None:
    """A flip that still parses is a different signed value, so the gateway signature catches it."""
    data = signed(build_receipt("cross:1,1")).to_bytes()
    caught_by_signature = 0
    for index in range(len(data)):
        tampered = data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]
        check, _ = failed_check(tampered)
        try:
            SignedReceipt.parse(tampered)
        except MalformedInput:
            assert check == "format", index
        else:
            assert check == "gateway signature", index
            caught_by_signature += 1
    assert caught_by_signature > len(data) // 3  # values, not just structure, were flipped


def test_every_truncation_fails_at_format() -> None:
    data = signed(build_receipt("single")).to_bytes()
    for size in range(0, len(data), 3):
        assert failed_check(data[:size])[0] == "format"


def test_other_spellings_and_oversize_fail_at_format() -> None:
    body = signed(build_receipt()).to_json()
    assert failed_check(json.dumps(body).encode())[0] == "format"
    assert failed_check(json.dumps(body, sort_keys=True, separators=(",", ":")).encode() + b"\n")[0] == "format"
    assert failed_check(b"{" * 2_000_000)[0] == "format"


def test_pinned_gateway_key() -> None:
    data = signed(build_receipt()).to_bytes()
    verify_receipt(data, ReceiptVerifyOptions(gateway_key=GATEWAY.public.signing_key))
    check, error = failed_check(data, ReceiptVerifyOptions(gateway_key=identity("other").public.signing_key))
    assert check == "gateway signature" and isinstance(error, InvalidSignature)


def test_an_impostor_cannot_sign_for_the_gateway() -> None:
    receipt = build_receipt()
    impostor = identity("impostor")
    forged = SignedReceipt(
        receipt, impostor.public.signing_key, impostor.sign("cloister/receipt/v1", receipt.signed_bytes())
    )
    assert failed_check(forged.to_bytes())[0] == "gateway signature"
    with pytest.raises(MalformedInput):
        sign_receipt(impostor, receipt)


# --- a dishonest gateway signs what does not hold together ---------------------------------------------------


def test_naming_replicas_the_rule_would_not_choose_fails() -> None:
    honest = build_receipt("sampling:3")
    chosen = tuple(m for m in MACHINES if m not in honest.selection.selected)[:3]
    steered = replace(
        honest,
        selection=dataclasses.replace(honest.selection, selected=chosen),
        replicas=tuple(REPLICAS[m].ref for m in chosen),
        commitments=tuple(REPLICAS[m].commit() for m in chosen),
        verdict=decide([REPLICAS[m].commit().commitment for m in chosen]),
    )
    check, error = failed_check(signed(steered).to_bytes())
    assert check == "selection" and isinstance(error, SelectionMismatch)
    assert chosen[0] in error.message


def test_changing_any_selection_input_fails() -> None:
    honest = build_receipt("sampling:3")
    for changes in (
        {"client_nonce": b"another nonce"},
        {"head_hash": "sha256:" + "ff" * 32},
        {"candidates": tuple(sorted((*honest.selection.candidates, "mc-zz")))},
        {"candidates": tuple(m for m in honest.selection.candidates if m in honest.selection.selected)},
    ):
        tampered = replace(honest, selection=dataclasses.replace(honest.selection, **changes))
        assert failed_check(signed(tampered).to_bytes())[0] == "selection", changes
    other_request = replace(honest, request_digest="sha256:" + "00" * 32)
    assert failed_check(signed(other_request).to_bytes())[0] == "selection"


def test_claiming_a_cross_check_that_the_coin_did_not_call_fails() -> None:
    honest = build_receipt("cross:0,2")
    referees = select_order()[1:3]
    claimed = replace(
        honest,
        selection=dataclasses.replace(honest.selection, cross_triggered=True, referees=referees),
        replicas=tuple(REPLICAS[m].ref for m in (*honest.selection.selected, *referees)),
        commitments=honest.commitments + tuple(REPLICAS[m].commit(role="referee") for m in referees),
    )
    claimed = replace(claimed, verdict=decide([c.commitment for c in claimed.commitments]))
    assert failed_check(signed(claimed).to_bytes())[0] == "selection"


def test_a_commitment_replayed_from_another_request_fails() -> None:
    honest = build_receipt("sampling:3")
    replayed = REPLICAS[honest.selection.selected[0]].commit(request_digest="sha256:" + "77" * 32)
    tampered = replace(honest, commitments=(replayed, *honest.commitments[1:]))
    check, error = failed_check(signed(tampered).to_bytes())
    assert check == "commitments" and isinstance(error, BindingMismatch)


def test_a_commitment_by_another_key_fails() -> None:
    honest = build_receipt("sampling:3")
    first, second = honest.selection.selected[:2]
    swapped = tuple(
        ReplicaRef(
            r.machine_id,
            REPLICAS[second if r.machine_id == first else r.machine_id].loader.public.signing_key,
            r.tcb_id,
        )
        for r in honest.replicas
    )
    check, error = failed_check(signed(replace(honest, replicas=swapped)).to_bytes())
    assert check == "commitments" and isinstance(error, InvalidSignature)


def test_a_false_verdict_fails() -> None:
    liar = select_order()[2]
    honest = build_receipt("sampling:3", faulty=frozenset({liar}))
    claimed = dataclasses.replace(
        honest.verdict, agreed=True, majority=tuple(sorted(honest.selection.selected)), dissenters=()
    )
    check, error = failed_check(signed(replace(honest, verdict=claimed, dispute_id=None)).to_bytes())
    assert check == "verdict" and isinstance(error, VerdictMismatch)
    hidden = replace(honest, commitments=tuple(c for c in honest.commitments if c.machine_id != liar))
    assert failed_check(signed(hidden).to_bytes())[0] == "verdict"  # dropping the dissent changes the verdict


def test_an_altered_answer_fails() -> None:
    honest = build_receipt("sampling:3")
    check, error = failed_check(signed(replace(honest, content_digest=digest_bytes(b"another answer"))).to_bytes())
    assert check == "content" and isinstance(error, DigestMismatch)


def test_a_majority_that_returned_different_texts_fails() -> None:
    honest = build_receipt("sampling:3")
    machine = honest.commitments[0].machine_id
    odd = REPLICAS[machine].commit(text="same tokens, other text")
    tampered = replace(honest, commitments=(odd, *honest.commitments[1:]))
    assert failed_check(signed(tampered).to_bytes())[0] == "content"


def test_an_undecided_receipt_still_binds_its_answer_to_a_commitment() -> None:
    order = select_order()
    receipt = build_receipt("sampling:2", faulty=frozenset({order[1]}))
    assert receipt.verdict.output_digest is None
    assert verify_receipt(signed(receipt).to_bytes()).checklist.ok
    assert failed_check(signed(replace(receipt, content_digest=digest_bytes(b"x"))).to_bytes())[0] == "content"


# --- what the verifier trusts from the ledger ---------------------------------------------------------------


def test_replicas_pinned_by_the_ledger() -> None:
    receipt = build_receipt("sampling:3")
    data = signed(receipt).to_bytes()
    ledger = {r.machine_id: r for r in receipt.replicas}
    check = verify_receipt(data, ReceiptVerifyOptions(replicas=ledger, head_hashes={HEAD_HEIGHT: HEAD_HASH}))
    assert [item.name for item in check.checklist.items] == [
        "format",
        "gateway signature",
        "replicas",
        "head",
        *ALL_CHECKS[2:],
    ]
    first = receipt.replicas[0]
    other_tcb = {**ledger, first.machine_id: dataclasses.replace(first, tcb_id="sha256:" + "99" * 32)}
    assert failed_check(data, ReceiptVerifyOptions(replicas=other_tcb))[0] == "replicas"
    other_key = {**ledger, first.machine_id: dataclasses.replace(first, loader_signing_key=bytes(32))}
    assert failed_check(data, ReceiptVerifyOptions(replicas=other_key))[0] == "replicas"
    missing = {k: v for k, v in ledger.items() if k != first.machine_id}
    assert failed_check(data, ReceiptVerifyOptions(replicas=missing))[0] == "replicas"


def test_head_hash_pinned_by_the_ledger() -> None:
    data = signed(build_receipt()).to_bytes()
    for known in ({HEAD_HEIGHT: "sha256:" + "00" * 32}, {HEAD_HEIGHT + 1: HEAD_HASH}, {}):
        check, error = failed_check(data, ReceiptVerifyOptions(head_hashes=known))
        assert check == "head" and isinstance(error, BindingMismatch)


# --- structure ----------------------------------------------------------------------------------------------


def test_receipts_that_do_not_hold_together_cannot_be_built() -> None:
    honest = build_receipt("sampling:3")
    selection = honest.selection
    for changes in (
        {"receipt_id": "rc-xyz"},
        {"mode": "sampling: 3"},
        {"mode": "majority"},
        {"replicas": honest.replicas[:2]},
        {"replicas": (*honest.replicas, REPLICAS[MACHINES[-1]].ref)},
        {"commitments": ()},
        {"commitments": (*honest.commitments, REPLICAS[MACHINES[-1]].commit())},
        {"dispute_id": "or-1"},
        {"gateway": "gw"},
        {"issued_at": -1},
        {"selection": None},
    ):
        with pytest.raises(MalformedInput):
            replace(honest, **changes)
    for selection_changes in (
        {"candidates": tuple(reversed(selection.candidates))},
        {"selected": ("mc-not-a-candidate",)},
        {"referees": selection.selected[:1]},
        {"client_nonce": b""},
        {"sealed_digest": "nope"},
        {"cross_triggered": "yes"},
    ):
        with pytest.raises(MalformedInput):
            dataclasses.replace(selection, **selection_changes)
    with pytest.raises(MalformedInput):
        SelectionInputs.from_json({**selection.to_json(), "client_nonce": "0g"})


def test_receipt_ids_are_fresh() -> None:
    ids = {new_receipt_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 19 and i.startswith("rc-") for i in ids)

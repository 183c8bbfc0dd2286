"""The signed order report: round trips, edits after signing, other signers, replays, malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.provenance import samples
from tests.provenance.samples import ORDER

from cloister.attest.checks import Checklist
from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity
from cloister.errors import BindingMismatch, CloisterError, DigestMismatch, InvalidSignature, MalformedInput
from cloister.provenance.report import (
    FAILED,
    REPORT_DOMAIN,
    Checkpoint,
    OrderReport,
    Output,
    SignedReport,
    Usage,
    Wipe,
    report_digest,
    sign_report,
    verify_report,
)


@pytest.fixture
def loader() -> Identity:
    return Identity.generate()


@pytest.fixture
def signed(loader: Identity) -> SignedReport:
    return sign_report(samples.report(), loader)


def wire_json(signed: SignedReport) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(signed.to_bytes())
    return data


def refused(
    error_type: type[CloisterError], data: bytes | str, loader: Identity, check: str, **expect: Any
) -> CloisterError:
    """Verify ``data``, expect ``error_type`` naming ``check``, and the checklist to end with that failure."""
    checklist = Checklist()
    with pytest.raises(error_type) as error:
        verify_report(
            data,
            loader_public_key=loader.public.signing_key,
            expected_order_id=expect.pop("expected_order_id", ORDER),
            checklist=checklist,
            **expect,
        )
    assert error.value.details["check"] == check
    assert checklist.items[-1].name == check and not checklist.items[-1].passed
    assert all(item.passed for item in checklist.items[:-1])
    return error.value


def resigned(loader: Identity, report_json: Any) -> bytes:
    """A report object the genuine loader key signed, bypassing the typed builder."""
    signature = loader.sign(REPORT_DOMAIN, canonical_json(report_json))
    return canonical_json(
        {"report": report_json, "signer": loader.public.signing_key.hex(), "signature": signature.hex()}
    )


# --- the good path -------------------------------------------------------------------------------------------


def test_round_trip(loader: Identity, signed: SignedReport) -> None:
    checklist = Checklist()
    wire = signed.to_bytes()
    report = verify_report(
        wire,
        loader_public_key=loader.public.signing_key,
        expected_order_id=ORDER,
        expected_digest=report_digest(signed),
        checklist=checklist,
    )
    assert report == samples.report()
    assert report_digest(signed) == report_digest(wire) == report_digest(wire.decode()) == digest_bytes(wire)
    assert [(c.name, c.passed) for c in checklist.items] == [
        ("format", True),
        ("signature", True),
        ("report", True),
        ("order", True),
        ("ledger digest", True),
    ]
    assert set(json.loads(wire)) == {"report", "signer", "signature"}


def test_a_respelled_report_still_verifies_and_hashes_the_same(loader: Identity, signed: SignedReport) -> None:
    pretty = json.dumps(wire_json(signed), indent=2, sort_keys=False)
    assert report_digest(pretty) == report_digest(signed)
    verify_report(
        pretty,
        loader_public_key=loader.public.signing_key,
        expected_order_id=ORDER,
        expected_digest=report_digest(signed),
    )


def test_failed_run_round_trip(loader: Identity) -> None:
    failed = samples.report(
        outcome=FAILED,
        failure_reason="dataset of-2222222222222222 does not hash to its offer's digest",
        outputs=(),
        checkpoints=(),
        usage=Usage(3, 0, 0),
    )
    wire = sign_report(failed, loader).to_bytes()
    assert verify_report(wire, loader_public_key=loader.public.signing_key, expected_order_id=ORDER) == failed


# --- forgeries, edits and replays ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("usage", "seconds"), 60),
        (("outputs", 0, "uri"), "s3://attacker/adapter"),
        (("wipe", "files"), 0),
        (("inputs", 1, "digest"), digest_bytes(b"swapped dataset")),
        (("order_id",), "or-aaaaaaaaaaaaaaaa"),
    ],
)
def test_report_edited_after_signing(loader: Identity, signed: SignedReport, path: tuple[Any, ...], value: Any) -> None:
    data = wire_json(signed)
    target = data["report"]
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    error = refused(InvalidSignature, json.dumps(data), loader, "signature")
    assert "altered after the loader signed it" in error.message


def test_report_signed_by_another_key(loader: Identity) -> None:
    forger = Identity.generate()
    forged = sign_report(samples.report(), forger)
    error = refused(InvalidSignature, forged.to_bytes(), loader, "signature")
    assert forger.address in error.message and loader.address in error.message
    # Claiming to be the loader does not make the forger's signature the loader's.
    claimed = {**wire_json(forged), "signer": loader.public.signing_key.hex()}
    refused(InvalidSignature, json.dumps(claimed), loader, "signature")


def test_a_signature_from_another_domain_is_refused(loader: Identity) -> None:
    body = canonical_json(samples.report().to_json())
    wire = {"report": json.loads(body), "signer": loader.public.signing_key.hex()}
    wire["signature"] = loader.sign("cloister/tx/v1", body).hex()
    refused(InvalidSignature, json.dumps(wire), loader, "signature")


def test_report_replayed_for_another_order(loader: Identity, signed: SignedReport) -> None:
    error = refused(BindingMismatch, signed.to_bytes(), loader, "order", expected_order_id="or-aaaaaaaaaaaaaaaa")
    assert "replayed" in error.message


def test_report_not_the_one_on_the_ledger(loader: Identity, signed: SignedReport) -> None:
    refused(DigestMismatch, signed.to_bytes(), loader, "ledger digest", expected_digest=digest_bytes(b"other"))


# --- malformed input -----------------------------------------------------------------------------------------


def test_truncated_reports(loader: Identity, signed: SignedReport) -> None:
    wire = signed.to_bytes()
    for cut in range(0, len(wire), 13):
        refused(MalformedInput, wire[:cut], loader, "format")
    refused(MalformedInput, wire[:-1], loader, "format")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: {**d, "extra": 1},
        lambda d: {k: v for k, v in d.items() if k != "signer"},
        lambda d: {**d, "signature": d["signature"][:-2]},
        lambda d: {**d, "signature": d["signature"].upper()},
        lambda d: {**d, "signer": "00" * 31},
        lambda d: {**d, "report": {**d["report"], "loss": 0.5}},
        lambda d: [d],
    ],
    ids=["extra field", "no signer", "short signature", "upper-case hex", "short signer", "float", "not an object"],
)
def test_malformed_wire_forms(loader: Identity, signed: SignedReport, mutate: Any) -> None:
    refused(MalformedInput, json.dumps(mutate(wire_json(signed))), loader, "format")


def test_malformed_texts(loader: Identity, signed: SignedReport) -> None:
    wire = signed.to_bytes()
    for text in (b"", b"\xff", b"[" * 50_000, wire.replace(b'{"report":', b'{"signer":"00","report":', 1)):
        refused(MalformedInput, text, loader, "format")


def _bad_reports(loader: Identity) -> dict[str, tuple[Any, str]]:
    """Name → (report object the loader signed, what the refusal must mention)."""
    good = samples.report().to_json()
    return {
        "extra field": ({**good, "cost": 5}, "unknown cost"),
        "missing wipe": ({k: v for k, v in good.items() if k != "wipe"}, "missing wipe"),
        "bad engine digest": ({**good, "engine": {**good["engine"], "digest": "sha256:00"}}, "must be a digest"),
        "no inputs": ({**good, "inputs": []}, "inputs must hold 1"),
        "unknown outcome": ({**good, "outcome": "partial"}, "outcome must be one of"),
        "completed with a reason": ({**good, "failure_reason": "oops"}, "completed report"),
        "completed without outputs": ({**good, "outputs": []}, "completed report"),
        "failed without a reason": ({**good, "outcome": "failed"}, "failure_reason must be"),
        "duplicate outputs": ({**good, "outputs": [good["outputs"][0]] * 2}, "same name"),
        "checkpoint steps go back": ({**good, "checkpoints": good["checkpoints"][::-1]}, "strictly increase"),
        "negative usage": ({**good, "usage": {**good["usage"], "tokens": -1}}, "usage.tokens"),
        "usage field missing": ({**good, "usage": {"seconds": 1, "steps": 1}}, "missing tokens"),
        "wipe before the end": ({**good, "wipe": {**good["wipe"], "at": good["ended_at"] - 1}}, "wipe cannot precede"),
        "nothing wiped": ({**good, "wipe": {**good["wipe"], "paths": []}}, "wiped paths must hold 1"),
        "wiped path not text": ({**good, "wipe": {**good["wipe"], "paths": [7]}}, "str items"),
        "output uri empty": ({**good, "outputs": [{**good["outputs"][0], "uri": ""}]}, "URI of output"),
        "ends before it starts": ({**good, "ended_at": good["started_at"] - 1}, "cannot end"),
        "machine id not an id": ({**good, "machine_id": "mc/../x"}, "machine id must be an id"),
    }


@pytest.mark.parametrize("name", list(_bad_reports(Identity.generate())))
def test_malformed_reports_signed_by_the_loader_fail_the_report_check(loader: Identity, name: str) -> None:
    report_json, fragment = _bad_reports(loader)[name]
    error = refused(MalformedInput, resigned(loader, report_json), loader, "report")
    assert fragment in error.message


@pytest.mark.parametrize(
    "changes",
    [
        {"outputs": (Output("adapter", samples.ADAPTER.digest, "file:///a"),) * 2},
        {"checkpoints": (Checkpoint(5, samples.TCB, "file:///c", 1), Checkpoint(5, samples.TCB, "file:///c", 2))},
        {"wipe": ("inputs",)},
        {"usage": (1, 2, 3)},
        {"outcome": FAILED},
        {"inputs": (samples.MODEL, samples.MODEL)},
    ],
)
def test_inconsistent_reports_cannot_be_built(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedInput):
        samples.report(**changes)


def test_a_wipe_names_what_it_erased() -> None:
    with pytest.raises(MalformedInput, match="wiped paths"):
        Wipe((), 0, 0, samples.ENDED)
    with pytest.raises(MalformedInput, match="wiped path"):
        Wipe(("inputs\n",), 0, 0, samples.ENDED)


def test_parsed_reports_equal_built_ones(loader: Identity) -> None:
    report = samples.report()
    assert OrderReport.from_json(json.loads(canonical_json(report.to_json()))) == report

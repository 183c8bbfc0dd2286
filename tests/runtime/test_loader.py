"""The trusted loader: a whole order end to end, and every refusal before the engine starts."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity
from cloister.crypto.stream import seal_stream
from cloister.engines.bundle import pack
from cloister.errors import (
    BindingMismatch,
    CloisterError,
    EngineFailed,
    InputRefused,
    IntegrityError,
    InvalidSignature,
    LoaderError,
)
from cloister.provenance.report import verify_report
from cloister.provenance.statement import verify_manifest
from cloister.runtime.checkpoints import ResumePoint
from cloister.runtime.loader import LoaderResult
from cloister.runtime.results import open_result, open_result_key

from .conftest import DATASET_TEXT, MODEL_TEXT, Scenario, write_engine

MODEL, CLINIC, LAB, ENGINE = (f"of-{n:016x}" for n in (1, 2, 3, 4))


def _run(scenario: Scenario, **params: object) -> LoaderResult:
    scenario.params.update(params)
    loader = scenario.loader()
    prepared = loader.prepare(scenario.order, scenario.offers, scenario.grants(), scenario.owner_account)
    outcome = loader.run(prepared, timeout=60)
    return loader.finish(prepared, outcome)


def test_happy_path_report_manifest_and_owner_only_results(scenario: Scenario, tmp_path: Path) -> None:
    progress: list[dict[str, object]] = []
    loader = scenario.loader()
    scenario.params["learning_rate"] = "2e-4"  # the ledger holds no floats
    prepared = loader.prepare(scenario.order, scenario.offers, scenario.grants(), scenario.owner_account)
    assert (prepared.workspace.path.stat().st_mode & 0o777) == 0o700
    assert prepared.params["learning_rate"] == 0.0002
    outcome = loader.run(prepared, timeout=60, on_progress=lambda entry: progress.append(dict(entry)))
    assert [entry["step"] for entry in progress] == [1, 2, 3]
    assert (outcome.usage.steps, outcome.usage.tokens) == (3, 30)
    assert [sealed.checkpoint.step for sealed in outcome.checkpoints] == [1, 2, 3]
    result = loader.finish(prepared, outcome)

    assert not scenario.workspace.exists()
    report = verify_report(
        result.report_bytes,
        loader_public_key=scenario.loader_identity.public.signing_key,
        expected_order_id=scenario.order_id,
        expected_digest=result.report_digest,
    )
    assert report.engine.offer_id == ENGINE
    assert [ref.offer_id for ref in report.inputs] == [MODEL, CLINIC, LAB]
    assert [ref.digest for ref in report.inputs[:2]] == [digest_bytes(MODEL_TEXT), digest_bytes(DATASET_TEXT)]
    assert {output.name for output in report.outputs} == {"adapter.tar", "metrics.json"}
    assert [c.step for c in report.checkpoints] == [1, 2, 3]
    assert report.wipe.files > 0 and "inputs" in report.wipe.paths

    adapter = next(sealed for sealed in result.outputs if sealed.output.name == "adapter.tar")
    assert result.manifest_bytes is not None
    manifest = verify_manifest(
        result.manifest_bytes,
        loader_public_key=scenario.loader_identity.public.signing_key,
        expected_subject_digest=adapter.output.digest,
        expected_order_id=scenario.order_id,
        expected_digest=result.manifest_digest,
    )
    assert manifest.predicate.hyperparameters["learning_rate"] == "0.0002"
    assert str(manifest.predicate.metrics.eval_after) == "0.75"
    assert str(manifest.predicate.metrics.final_loss) == repr(1 / 3)

    folder = open_result(
        scenario.store,
        adapter.output,
        adapter.sealed_key,
        scenario.developer,
        order_id=scenario.order_id,
        dest_dir=tmp_path / "result",
    )
    expected = hashlib.sha256(DATASET_TEXT + DATASET_TEXT + b"more\n" + MODEL_TEXT).digest()
    assert (folder / "weights.bin").read_bytes() == expected

    for stranger in (scenario.loader_identity, scenario.contents[MODEL].owner, Identity.generate()):
        with pytest.raises(IntegrityError):
            open_result_key(
                adapter.sealed_key, stranger, order_id=scenario.order_id, content_digest=adapter.output.digest
            )


def test_altered_report_and_manifest_fail_verification(scenario: Scenario) -> None:
    result = _run(scenario)
    key = scenario.loader_identity.public.signing_key
    altered = result.report_bytes.replace(b'"steps":3', b'"steps":4')
    assert altered != result.report_bytes
    with pytest.raises(InvalidSignature):
        verify_report(altered, loader_public_key=key, expected_order_id=scenario.order_id)
    with pytest.raises(BindingMismatch):
        verify_report(result.report_bytes, loader_public_key=key, expected_order_id="or-ffffffffffffffff")
    with pytest.raises(InvalidSignature):
        verify_report(
            result.report_bytes,
            loader_public_key=Identity.generate().public.signing_key,
            expected_order_id=scenario.order_id,
        )
    envelope = json.loads(result.manifest_bytes or b"")
    envelope["payload"] = envelope["payload"][:-8] + "AAAAAAA="
    with pytest.raises(CloisterError):
        verify_manifest(json.dumps(envelope), loader_public_key=key)


def _refused(scenario: Scenario, grants: list, *, check: str, offers: dict | None = None) -> InputRefused:  # type: ignore[type-arg]
    loader = scenario.loader()
    with pytest.raises(InputRefused) as caught:
        loader.prepare(scenario.order, offers or scenario.offers, grants, scenario.owner_account)
    assert caught.value.check == check, caught.value.message
    assert not scenario.marker.exists()
    assert not scenario.workspace.exists()
    return caught.value


def test_missing_grant_is_refused(scenario: Scenario) -> None:
    grants = [g for g in scenario.grants() if g.offer_id != LAB]
    assert _refused(scenario, grants, check="grant").input == LAB


@pytest.mark.parametrize("bind", [{"order_id": "or-00000000000000ff"}, {"machine_id": "mc-00000000000000ff"}])
def test_grant_for_another_order_or_machine_is_refused(scenario: Scenario, bind: dict[str, str]) -> None:
    grants = [g for g in scenario.grants() if g.offer_id != CLINIC] + [scenario.grant(CLINIC, **bind)]
    assert _refused(scenario, grants, check="grant").input == CLINIC


def test_grant_to_another_loader_key_is_refused(scenario: Scenario) -> None:
    other = Identity.generate().public.sealing_key
    grants = [g for g in scenario.grants() if g.offer_id != MODEL] + [scenario.grant(MODEL, key=other)]
    assert _refused(scenario, grants, check="grant").input == MODEL


def _tamper(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


def _blob_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def test_tampered_blob_is_refused(scenario: Scenario) -> None:
    _tamper(_blob_path(str(scenario.contents[CLINIC].offer.blob_uri)), 100)
    assert _refused(scenario, scenario.grants(), check="decryption").input == CLINIC


def test_truncated_blob_is_refused(scenario: Scenario) -> None:
    path = _blob_path(str(scenario.contents[MODEL].offer.blob_uri))
    path.write_bytes(path.read_bytes()[:-20])
    assert _refused(scenario, scenario.grants(), check="decryption").input == MODEL


def test_content_that_is_not_the_announced_digest_is_refused(scenario: Scenario) -> None:
    content = scenario.contents[LAB]
    content.offer = replace(content.offer, content_digest=digest_bytes(b"something else"))
    assert _refused(scenario, scenario.grants(), check="digest").input == LAB


def test_replaced_blob_sealed_with_the_right_key_is_refused(scenario: Scenario) -> None:
    """The host swaps the ciphertext for other content under the same DEK: the re-hash catches it."""
    content = scenario.contents[LAB]
    sealed = io.BytesIO()
    seal_stream(content.dek, io.BytesIO(b"poisoned data\n"), sealed)
    sealed.seek(0)
    content.offer = replace(content.offer, blob_uri=scenario.store.put(sealed).uri)
    assert _refused(scenario, scenario.grants(), check="digest").input == LAB


def test_tampered_engine_bundle_is_refused(scenario: Scenario) -> None:
    """The engine owner's DEK seals a different bundle than the one whose digest the order names."""
    engine = scenario.contents[ENGINE]
    bad = b"not the engine"
    sealed = io.BytesIO()
    seal_stream(engine.dek, io.BytesIO(bad), sealed)
    sealed.seek(0)
    engine.offer = replace(engine.offer, blob_uri=scenario.store.put(sealed).uri)
    assert _refused(scenario, scenario.grants(), check="digest").input == ENGINE


def test_engine_not_allowed_by_a_data_owner_is_refused(scenario: Scenario) -> None:
    content = scenario.contents[CLINIC]
    restrictions = replace(content.offer.restrictions, engine_digests=(digest_bytes(b"another engine"),))
    content.offer = replace(content.offer, restrictions=restrictions)
    assert _refused(scenario, scenario.grants(), check="engine allowed").input == CLINIC


def test_missing_offer_is_refused(scenario: Scenario) -> None:
    offers = {k: v for k, v in scenario.offers.items() if k != ENGINE}
    assert _refused(scenario, scenario.grants(), check="offer", offers=offers).input == ENGINE


def test_unknown_parameter_is_refused_before_any_data_is_decrypted(scenario: Scenario) -> None:
    scenario.params["nonsense"] = 1
    _refused(scenario, scenario.grants(), check="parameters")


def test_order_not_assigned_to_this_machine_is_refused(scenario: Scenario) -> None:
    loader = scenario.loader(machine_id="mc-00000000000000aa")
    with pytest.raises(LoaderError):
        loader.prepare(scenario.order, scenario.offers, scenario.grants(), scenario.owner_account)
    assert not (scenario.root / "workspaces" / scenario.order_id).exists()


def test_engine_failure_gives_a_signed_failed_report_and_a_wiped_workspace(scenario: Scenario) -> None:
    loader = scenario.loader()
    prepared = loader.prepare(scenario.order, scenario.offers, scenario.grants(), scenario.owner_account)
    (prepared.workspace.outputs / "adapter").mkdir()  # makes the engine's own mkdir fail
    with pytest.raises(EngineFailed) as caught:
        loader.run(prepared, timeout=60)
    result = loader.fail(scenario.order, scenario.offers, caught.value.message, started_at=prepared.started_at)
    assert not scenario.workspace.exists()
    report = verify_report(
        result.report_bytes,
        loader_public_key=scenario.loader_identity.public.signing_key,
        expected_order_id=scenario.order_id,
    )
    assert report.outcome == "failed" and "exited with code" in str(report.failure_reason)
    assert report.wipe.files > 0


def test_refusal_report_records_the_wipe_done_by_prepare(scenario: Scenario) -> None:
    loader = scenario.loader()
    grants = [g for g in scenario.grants() if g.offer_id != LAB]
    with pytest.raises(InputRefused) as caught:
        loader.prepare(scenario.order, scenario.offers, grants, scenario.owner_account)
    result = loader.fail(scenario.order, scenario.offers, caught.value.message, started_at=0)
    report = verify_report(
        result.report_bytes,
        loader_public_key=scenario.loader_identity.public.signing_key,
        expected_order_id=scenario.order_id,
    )
    assert report.outcome == "failed" and report.wipe.files > 0 and result.manifest_bytes is None


def test_checkpoint_round_trip_continues_the_step_counter(scenario: Scenario) -> None:
    scenario.params["steps"] = 2
    first = _run(scenario)
    sealed = first.checkpoints[-1]
    assert sealed.checkpoint.step == 2

    scenario.params["steps"] = 4
    loader = scenario.loader()
    point = ResumePoint(sealed.checkpoint, sealed.loader_grant)
    prepared = loader.prepare(scenario.order, scenario.offers, scenario.grants(), scenario.owner_account, resume=point)
    steps: list[object] = []
    outcome = loader.run(prepared, timeout=60, on_progress=lambda entry: steps.append(entry["step"]))
    assert steps == [3, 4]
    assert outcome.usage.steps == 2
    result = loader.finish(prepared, outcome)
    report = verify_report(
        result.report_bytes,
        loader_public_key=scenario.loader_identity.public.signing_key,
        expected_order_id=scenario.order_id,
    )
    assert [c.step for c in report.checkpoints] == [2, 3, 4]


def test_checkpoint_owner_copy_can_be_regranted_to_a_replacement_machine(scenario: Scenario) -> None:
    from cloister.crypto.grants import seal_key_grant

    scenario.params["steps"] = 1
    sealed = _run(scenario).checkpoints[-1]
    dek = open_result_key(
        sealed.owner_key, scenario.developer, order_id=scenario.order_id, content_digest=sealed.checkpoint.digest
    )
    replacement, machine = Identity.generate(), "mc-00000000000000bb"
    regrant = seal_key_grant(
        dek,
        replacement.public.sealing_key,
        order_id=scenario.order_id,
        content_digest=sealed.checkpoint.digest,
        machine_id=machine,
        engine_digest=scenario.engine_digest,
    )
    scenario.machine_id = machine
    scenario.loader_identity = replacement
    scenario.params["steps"] = 2
    loader = scenario.loader()
    prepared = loader.prepare(
        scenario.order,
        scenario.offers,
        scenario.grants(),
        scenario.owner_account,
        resume=ResumePoint(sealed.checkpoint, regrant),
    )
    outcome = loader.run(prepared, timeout=60)
    assert outcome.usage.steps == 1
    report = loader.finish(prepared, outcome).report.report
    assert report.machine_id == machine and [c.step for c in report.checkpoints] == [1, 2]


def test_tampered_checkpoint_is_refused(scenario: Scenario) -> None:
    scenario.params["steps"] = 1
    sealed = _run(scenario).checkpoints[-1]
    _tamper(_blob_path(sealed.checkpoint.uri), 60)
    with pytest.raises(InputRefused) as caught:
        scenario.loader().prepare(
            scenario.order,
            scenario.offers,
            scenario.grants(),
            scenario.owner_account,
            resume=ResumePoint(sealed.checkpoint, sealed.loader_grant),
        )
    assert caught.value.check == "content"
    assert not scenario.workspace.exists()


def test_a_second_run_of_a_live_order_is_refused(scenario: Scenario) -> None:
    loader = scenario.loader()
    loader.prepare(scenario.order, scenario.offers, scenario.grants(), scenario.owner_account)
    with pytest.raises(LoaderError):
        loader.prepare(scenario.order, scenario.offers, scenario.grants(), scenario.owner_account)


def test_a_host_that_swaps_in_its_own_engine_cannot_open_the_owners_grants(scenario: Scenario) -> None:
    """Grants bind the engine the owners consented to: a forged order naming the host's engine opens nothing."""
    honest_grants = scenario.grants()
    honest_engine = scenario.contents.pop(ENGINE)
    evil_src = write_engine(scenario.root / "evil-src")
    (evil_src / "toy" / "main.py").write_text((evil_src / "toy" / "main.py").read_text() + "\n# exfiltrate\n")
    evil = scenario.publish(9, "engine", "evil-engine", pack(evil_src))
    assert evil.offer.content_digest != honest_engine.offer.content_digest
    # The host owns its engine, so it can grant that one to the machine correctly; the owners' grants stay as made.
    forged = [g for g in honest_grants if g.offer_id != ENGINE] + [scenario.grant(evil.offer.offer_id)]
    refused = _refused(scenario, forged, check="grant")
    assert refused.input != evil.offer.offer_id, "the host's own engine grant opens; an owner's does not"

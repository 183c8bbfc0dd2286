"""The composite TCB: report-data binding of loader keys, GPU evidence and nonce; appraisal and its verdicts."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.sim.fixtures import CPU_CHIP, GPU_CHIP, ISSUED, MEASUREMENT, NOW, VENDOR

from cloister.attest import registry
from cloister.attest.checks import Checklist
from cloister.attest.policy import AppraisalPolicy
from cloister.attest.tcb import (
    SIMULATED,
    AttestationResult,
    PlatformEvidence,
    Tcb,
    appraise,
    build_sim_tcb,
    expected_report_data,
)
from cloister.crypto.canonical import canonical_json
from cloister.crypto.identity import Identity
from cloister.errors import (
    CertificateInvalid,
    ConfigError,
    EvidenceMalformed,
    PolicyViolation,
    StaleEvidence,
    VerificationFailed,
)

LOADER = Identity.generate().public
NONCE = bytes(range(100, 132))
SPECS = {"cpu_cores": 8, "memory_gib": 32, "gpus": ["H100"], "disk_gib": 100}
DEVNET = AppraisalPolicy.packaged("devnet")
ROOTS = {"sim": [VENDOR.certificate]}


def make(*, gpu: bool = True, nonce: bytes = NONCE, **options: Any) -> Tcb:
    return build_sim_tcb(
        CPU_CHIP,
        GPU_CHIP if gpu else None,
        loader=LOADER,
        nonce=nonce,
        specs=SPECS,
        measurement=MEASUREMENT,
        **options,
    )


def run(
    tcb: Tcb, policy: AppraisalPolicy = DEVNET, *, nonce: bytes = NONCE, roots: Any = ROOTS, **options: Any
) -> AttestationResult:
    return appraise(tcb, policy, now=NOW, expected_nonce=nonce, roots_by_platform=roots, **options)


def rejected(tcb: Tcb, error: type[Exception], check: str, policy: AppraisalPolicy = DEVNET, **options: Any) -> str:
    """Appraisal fails with ``error`` naming ``check``, and the checklist ends with that failed check."""
    checklist = Checklist()
    with pytest.raises(error) as caught:
        run(tcb, policy, checklist=checklist, **options)
    assert caught.value.check == check  # type: ignore[attr-defined]
    assert (checklist.items[-1].name, checklist.items[-1].passed) == (check, False)
    assert all(item.passed for item in checklist.items[:-1])
    return str(caught.value)


def test_report_data_follows_the_design_formula() -> None:
    tcb = make()
    assert tcb.gpu is not None
    gpu_json = {"platform": "sim", "evidence": tcb.gpu.evidence}
    gpu_digest = hashlib.sha256(canonical_json(gpu_json)).digest()
    expected = (
        hashlib.sha256(LOADER.signing_key + LOADER.sealing_key).digest() + hashlib.sha256(gpu_digest + NONCE).digest()
    )
    assert expected_report_data(LOADER, tcb.gpu, NONCE) == expected
    assert run(tcb).cpu.report_data == expected
    no_gpu = hashlib.sha256(bytes(32) + NONCE).digest()
    assert expected_report_data(LOADER, None, NONCE)[32:] == no_gpu
    assert run(make(gpu=False)).cpu.report_data[32:] == no_gpu


def test_a_devnet_tcb_is_accepted_as_simulated() -> None:
    tcb = make()
    result = run(tcb)
    assert (result.verdict, result.policy_digest, result.tcb_digest) == (SIMULATED, DEVNET.digest, tcb.digest)
    assert result.gpu is not None and result.gpu.report_data == NONCE
    names = [item.name for item in result.checklist.items]
    assert names[:2] == ["cpu.platform", "cpu.evidence"] and "cpu.report_signature" in names
    assert "gpu.report_signature" in names and "cpu.debug" in names and "gpu.measurement" in names
    for check in ("loader_binding", "gpu_binding", "gpu_nonce", "nonce", "cpu_platform", "gpu_platform"):
        assert check in names
    assert result.checklist.ok
    data = result.to_json()
    assert data["cpu"]["claims"]["chip_id"] == "node-1" and data["gpu"]["platform"] == "sim"
    assert data["appraised_at"] == NOW.isoformat() and data["verdict"] == "simulated"
    assert result.digest == run(tcb).digest  # deterministic for the same inputs and time
    assert json.loads(canonical_json(data)) == data


def test_a_tcb_without_gpu_is_accepted_unless_the_policy_requires_one() -> None:
    assert run(make(gpu=False)).gpu is None
    strict = dataclasses.replace(DEVNET, require_gpu=True)
    message = rejected(make(gpu=False), PolicyViolation, "gpu_required", strict)
    assert "requires GPU evidence" in message


def test_swapped_loader_key_is_rejected() -> None:
    swapped = dataclasses.replace(make(), loader=Identity.generate().public)
    assert "loader keys" in rejected(swapped, VerificationFailed, "loader_binding")
    half = dataclasses.replace(make(), loader=dataclasses.replace(LOADER, sealing_key=os.urandom(32)))
    rejected(half, VerificationFailed, "loader_binding")


def test_swapped_or_removed_gpu_evidence_is_rejected() -> None:
    other = make()  # the same GPU, the same nonce: only the signature differs
    assert other.gpu != make().gpu
    rejected(dataclasses.replace(make(), gpu=other.gpu), VerificationFailed, "gpu_binding")
    rejected(dataclasses.replace(make(), gpu=None), VerificationFailed, "gpu_binding")
    added = dataclasses.replace(make(gpu=False), gpu=other.gpu)
    rejected(added, VerificationFailed, "gpu_binding")


def test_gpu_evidence_for_another_nonce_is_rejected() -> None:
    """A CPU report that binds GPU evidence answering a different nonce: both halves must answer the TCB's."""
    stale_gpu = make(nonce=bytes(32)).gpu
    assert stale_gpu is not None
    report_data = expected_report_data(LOADER, stale_gpu, NONCE)
    cpu = CPU_CHIP.evidence(CPU_CHIP.cpu_report(report_data, measurement=MEASUREMENT)).to_json()
    tcb = Tcb(PlatformEvidence("sim", cpu), stale_gpu, LOADER, NONCE, SPECS)
    assert "another nonce" in rejected(tcb, StaleEvidence, "gpu_nonce")


def test_a_stale_nonce_is_rejected() -> None:
    old = make(nonce=bytes(32))
    assert "a replay" in rejected(old, StaleEvidence, "nonce")
    replayed = dataclasses.replace(old, nonce=NONCE)  # claiming the fresh nonce breaks the binding instead
    rejected(replayed, VerificationFailed, "gpu_binding")
    with pytest.raises(ConfigError, match="32 bytes"):
        run(make(), nonce=b"short")


def test_debug_sim_report_is_rejected_by_default() -> None:
    assert "debug" in rejected(make(debug=True), PolicyViolation, "cpu.debug")
    lenient = AppraisalPolicy.from_json({**DEVNET.to_json(), "sim": {"allow_debug": True}})
    assert run(make(debug=True), lenient).cpu.debug


def test_sim_is_refused_unless_the_policy_allows_simulation() -> None:
    rejected(make(), PolicyViolation, "cpu_platform", AppraisalPolicy())
    listed = AppraisalPolicy.from_json({**DEVNET.to_json(), "allow_simulated": False})
    assert "simulated" in rejected(make(), PolicyViolation, "simulated", listed)
    cpu_only = AppraisalPolicy.from_json({**DEVNET.to_json(), "gpu_platforms": ["nvgpu"]})
    rejected(make(), PolicyViolation, "gpu_platform", cpu_only)


def test_platform_policy_tables_apply_to_each_slot() -> None:
    policy = AppraisalPolicy.from_json({**DEVNET.to_json(), "sim": {"measurements": [MEASUREMENT.hex()]}})
    run(make(gpu=False), policy)
    rejected(make(), PolicyViolation, "gpu.measurement", policy)


def test_platform_errors_are_filed_under_their_slot() -> None:
    message = rejected(make(), CertificateInvalid, "cpu.roots", roots={})
    assert message.startswith("CPU evidence (sim):")
    late = NOW.replace(year=2045)
    checklist = Checklist()
    with pytest.raises(CertificateInvalid) as caught:
        appraise(make(), DEVNET, now=late, expected_nonce=NONCE, roots_by_platform=ROOTS, checklist=checklist)
    assert caught.value.check == "cpu.validity"
    tcb = make()
    assert tcb.gpu is not None
    broken = dataclasses.replace(tcb, gpu=PlatformEvidence("sim", {**tcb.gpu.evidence, "report": "AAAA"}))
    rejected(broken, EvidenceMalformed, "gpu.report")


def test_tcb_bytes_round_trip_canonically() -> None:
    tcb = make()
    assert Tcb.from_bytes(tcb.to_bytes()) == tcb
    assert tcb.to_bytes() == canonical_json(json.loads(tcb.to_bytes()))
    assert Tcb.from_bytes(json.dumps(tcb.to_json(), indent=2).encode()) == tcb


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "version 2"),
        ({"version": True}, "version True"),
        ({"nonce": "00" * 31}, "nonce"),
        ({"loader_signing_key": "AB" * 32}, "loader_signing_key"),
        ({"specs": []}, "specs"),
        ({"cpu": {"platform": "nvgpu", "evidence": {}}}, "CPU slot"),
        ({"cpu": {"platform": "sgx", "evidence": {}}}, "CPU slot"),
        ({"gpu": {"platform": "snp", "evidence": {}}}, "GPU slot"),
        ({"gpu": {"platform": "sim", "evidence": []}}, "must be a JSON object"),
        ({"cpu": {"platform": "sim"}}, "exactly 'platform' and 'evidence'"),
        ({"extra": 1}, "exactly"),
    ],
)
def test_malformed_tcbs_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(EvidenceMalformed, match=message) as caught:
        Tcb.from_bytes(json.dumps({**make(gpu=False).to_json(), **change}).encode())
    assert caught.value.check == "tcb"


TCB_BYTES = make().to_bytes()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_random_and_truncated_tcb_bytes_raise_only_evidence_malformed(junk: bytes, data: st.DataObject) -> None:
    valid = TCB_BYTES
    cut = data.draw(st.integers(0, len(valid) - 1))
    for candidate in (junk, valid[:cut], valid[:cut] + junk):
        with contextlib.suppress(EvidenceMalformed):
            Tcb.from_bytes(candidate)


def test_sim_chip_certificates_expire_like_real_ones() -> None:
    chip = VENDOR.issue_chip("short-lived", now=ISSUED, lifetime=NOW - ISSUED)
    tcb = build_sim_tcb(chip, None, loader=LOADER, nonce=NONCE, specs=SPECS, measurement=MEASUREMENT)
    assert "expired" in rejected(tcb, CertificateInvalid, "cpu.validity")
    earlier = appraise(tcb, DEVNET, now=ISSUED, expected_nonce=NONCE, roots_by_platform=ROOTS)
    assert earlier.cpu.platform == "sim"


def test_specs_without_a_canonical_form_are_malformed() -> None:
    for specs in ({"ratio": 0.5}, _nested(5000)):
        data = {**make(gpu=False).to_json(), "specs": specs}
        with pytest.raises(EvidenceMalformed, match="canonical") as caught:
            Tcb.from_json(data)
        assert caught.value.check == "tcb"


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def test_an_unavailable_platform_is_named_with_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = registry.PlatformInfo("snp", "cloister.attest.ghost", frozenset({registry.CPU}), simulated=False)
    monkeypatch.setitem(registry.KNOWN, "snp", ghost)
    tcb = dataclasses.replace(make(gpu=False), cpu=PlatformEvidence("snp", {}))
    with pytest.raises(
        ConfigError, match="CPU evidence \\(snp\\): attestation platform 'snp' is not available"
    ) as caught:
        run(tcb)
    assert caught.value.details["check"] == "cpu.platform"

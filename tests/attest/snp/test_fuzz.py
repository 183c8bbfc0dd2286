"""Property tests: random, truncated and spliced bytes given to every SEV-SNP parser raise only typed errors."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.attest.snp.snpvectors import valid_cases
from tests.attest.vectors import read

from cloister.attest.cache import ChainCache
from cloister.attest.der import parse_certificate
from cloister.attest.snp import Evidence, verify
from cloister.attest.snp.certs import endorsement_key, load_certificates
from cloister.attest.snp.evidence import _read_evidence
from cloister.attest.snp.hcl import parse_hcl
from cloister.attest.snp.report import REPORT_SIZE, parse_report
from cloister.errors import AttestationError, EvidenceMalformed

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GOSEV = read("snp/gosev_attestation.bin")
AZURE = read("snp/trustee_az-snp-vtpm_hcl-report.bin")
VCEK = read("snp/gosev_vcek.testcer")
CASE = valid_cases()[0]
CACHED = replace(CASE.options, cache=ChainCache())
ORIGINAL = verify(CASE.evidence, CACHED).to_json()


@FUZZ
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_random_reports(data: bytes) -> None:
    with contextlib.suppress(EvidenceMalformed):
        parse_report(data)


@FUZZ
@given(st.integers(0, REPORT_SIZE - 1))
def test_truncated_reports(size: int) -> None:
    try:
        parse_report(GOSEV[:size])
    except EvidenceMalformed:
        return
    raise AssertionError("a truncated report parsed")


@FUZZ
@given(st.integers(0, len(AZURE)), st.binary(max_size=64))
def test_truncated_and_spliced_hcl_reports(size: int, tail: bytes) -> None:
    with contextlib.suppress(EvidenceMalformed):
        parse_hcl(AZURE[:size] + tail)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_certificate_files(data: bytes) -> None:
    with contextlib.suppress(EvidenceMalformed):
        load_certificates(data)


@FUZZ
@given(st.integers(0, len(VCEK) - 1), st.integers(1, 255))
def test_mutated_vcek_extensions(offset: int, delta: int) -> None:
    der = bytearray(VCEK)
    der[offset] = (der[offset] + delta) % 256
    with contextlib.suppress(EvidenceMalformed):
        endorsement_key(parse_certificate(bytes(der)))


@FUZZ
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_random_evidence_files(data: bytes) -> None:
    with contextlib.suppress(EvidenceMalformed):
        _read_evidence(data)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(JSON)
def test_random_json_evidence(document: object) -> None:
    for candidate in (document, {"platform": "snp", "report": document}, {"attestation_report": document}):
        with contextlib.suppress(EvidenceMalformed):
            _read_evidence(json.dumps(candidate).encode())


def test_virtee_json_with_wrong_types(tmp_path: Path) -> None:
    document = json.loads(read("snp/trustee_e2e_snp_evidence.json"))
    for key in ("version", "report_data", "current_tcb", "signature", "current"):
        broken = json.loads(json.dumps(document))
        broken["attestation_report"][key] = "x"
        path = tmp_path / "evidence.json"
        path.write_text(json.dumps(broken))
        try:
            Evidence.from_files(path)
        except EvidenceMalformed:
            continue
        raise AssertionError(f"{key} of the wrong type was accepted")


@FUZZ
@given(st.integers(0, REPORT_SIZE - 1), st.integers(0, 255))
def test_any_single_byte_change_is_rejected_or_harmless(offset: int, value: int) -> None:
    report = bytearray(CASE.evidence.report)
    report[offset] = value
    try:
        claims = verify(replace(CASE.evidence, report=bytes(report)), CACHED)
    except AttestationError:
        return
    assert claims.to_json() == ORIGINAL


@FUZZ
@given(st.binary(max_size=2 * REPORT_SIZE), st.lists(st.binary(max_size=64), max_size=3))
def test_verify_random_evidence(report: bytes, certificates: list[bytes]) -> None:
    try:
        verify(Evidence(report=report, certificates=(*CASE.evidence.certificates, *certificates)), CACHED)
    except AttestationError:
        return
    raise AssertionError("random bytes verified")

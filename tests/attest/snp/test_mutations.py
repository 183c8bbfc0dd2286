"""Byte flips: every flip of a valid report's signed bytes is rejected, and no flip anywhere yields other claims."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.attest.snp.snpvectors import Valid, valid_cases

from cloister.attest.cache import ChainCache
from cloister.attest.snp import verify
from cloister.attest.snp.hcl import is_hcl
from cloister.attest.snp.report import REPORT_SIZE, SIGNED_SIZE
from cloister.errors import AttestationError

CASES = valid_cases()
FLIPS = (0x01, 0x80)


def _cached(case: Valid) -> Valid:
    """Same verification with a chain cache, so thousands of flips cost one chain check."""
    return replace(case, options=replace(case.options, cache=ChainCache()))


def _flipped(report: bytes, offset: int, mask: int) -> bytes:
    data = bytearray(report)
    data[offset] ^= mask
    return bytes(data)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_flip_of_the_signed_region_is_rejected(case: Valid) -> None:
    case = _cached(case)
    start = 0x20 if is_hcl(case.evidence.report) else 0
    accepted = []
    for offset in range(start, start + SIGNED_SIZE):
        for mask in FLIPS:
            evidence = replace(case.evidence, report=_flipped(case.evidence.report, offset, mask))
            try:
                verify(evidence, case.options)
            except AttestationError:
                continue
            accepted.append((offset, mask))
    assert accepted == []


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_flips_outside_the_signed_region_never_change_the_claims(case: Valid) -> None:
    """Signature bytes, padding and (for Azure) the HCL header and runtime data: rejected, or the same claims."""
    case = _cached(case)
    original = verify(case.evidence, case.options).to_json()
    report = case.evidence.report
    start = 0x20 if is_hcl(report) else 0
    signed = range(start, start + SIGNED_SIZE)
    outside = [offset for offset in range(len(report)) if offset not in signed]
    assert len(outside) >= REPORT_SIZE - SIGNED_SIZE
    for offset in outside:
        evidence = replace(case.evidence, report=_flipped(report, offset, 0x01))
        try:
            claims = verify(evidence, case.options)
        except AttestationError:
            continue
        assert claims.to_json() == original, f"flip at 0x{offset:x} changed the claims"


def test_cache_is_used_and_rechecks_time() -> None:
    case = _cached(CASES[0])
    assert case.options.cache is not None
    verify(case.evidence, case.options)
    verify(case.evidence, case.options)
    assert (case.options.cache.hits, case.options.cache.misses) == (1, 1)
    late = replace(case.options, now=case.options.now.replace(year=2040))  # type: ignore[union-attr]
    with pytest.raises(AttestationError, match="expired"):
        verify(case.evidence, late)

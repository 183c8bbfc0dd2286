"""Azure TDX CVM (MANIFEST §2.8): the HCL report's runtime data is bound to the verified quote's REPORT_DATA."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.vectors import read

from cloister.attest import tdx
from cloister.attest.tdx.azure import hcl_runtime_data
from cloister.errors import EvidenceMalformed, VerificationFailed

QUOTE = "tdx/trustee_az-tdx-vtpm_td-quote.bin"
HCL = "tdx/trustee_az-tdx-vtpm_hcl-report.bin"


@pytest.fixture(scope="module")
def claims() -> tdx.Claims:
    return tdx.verify(tdx.Evidence(read(QUOTE)), tdx.VerifyOptions(now=datetime(2025, 1, 1, tzinfo=UTC)))


def test_runtime_data_is_bound(claims: tdx.Claims) -> None:
    assert claims.report_data.hex().startswith("9734504f") and claims.report_data[32:] == bytes(32)
    runtime = json.loads(hcl_runtime_data(read(HCL), claims))
    assert runtime["keys"][0]["kid"] == "HCLAkPub"


def test_changed_runtime_data_or_another_quote_is_refused(claims: tdx.Claims) -> None:
    report = bytearray(read(HCL))
    report[0x4D4 + 20] ^= 1  # inside the runtime JSON
    with pytest.raises(VerificationFailed) as info:
        hcl_runtime_data(bytes(report), claims)
    assert info.value.check == "hcl_report_data"
    other = tdx.verify(
        tdx.Evidence(read("tdx/trustee_tdx_quote_5.dat")), tdx.VerifyOptions(now=datetime(2025, 1, 1, tzinfo=UTC))
    )
    with pytest.raises(VerificationFailed) as info:
        hcl_runtime_data(read(HCL), other)
    assert info.value.check == "hcl_report"


@pytest.mark.parametrize(("offset", "value"), [(0, 0x00), (0x4C8, 2), (0x4CC, 2), (0x4D1, 0xFF)])
def test_malformed_hcl_reports(claims: tdx.Claims, offset: int, value: int) -> None:
    report = bytearray(read(HCL))
    report[offset] = value
    with pytest.raises(EvidenceMalformed):
        hcl_runtime_data(bytes(report), claims)
    with pytest.raises(EvidenceMalformed):
        hcl_runtime_data(read(HCL)[:0x4D0], claims)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1400))
def test_random_reports_raise_only_typed_errors(data: bytes) -> None:
    claims = tdx.verify(tdx.Evidence(read(QUOTE)), tdx.VerifyOptions(now=datetime(2025, 1, 1, tzinfo=UTC)))
    with contextlib.suppress(EvidenceMalformed, VerificationFailed):
        hcl_runtime_data(b"HCLA" + data, claims)

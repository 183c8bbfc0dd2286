"""The SEV-SNP vectors of MANIFEST §1 as evidence, with the roots and times their outcomes are stated for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from tests.attest.vectors import read

from cloister.attest.der import Certificate, parse_pem_certificates
from cloister.attest.snp import Evidence, VerifyOptions
from cloister.attest.snp.certs import load_certificates

VLEK_TIME = datetime(2025, 6, 1, tzinfo=UTC)
"""Inside the trustee VLEK's 2024-12-10 -> 2025-12-10 window."""
GOSEV_TIME = datetime(2022, 9, 24, 1, 0, tzinfo=UTC)
"""go-sev-guest's TestVerifyVcekCert time."""


@cache
def ark(product: str) -> tuple[Certificate, ...]:
    return tuple(parse_pem_certificates(read(f"roots/amd_ark_{product}.pem")))


def evidence(report: str, *certs: str) -> Evidence:
    """The report file with the certificates of the given files, read in place."""
    ders = [der for name in certs for der in load_certificates(read(name))]
    return Evidence(report=read(report), certificates=tuple(ders))


@dataclass(frozen=True)
class Valid:
    """A valid report with what verifies it."""

    name: str
    evidence: Evidence
    options: VerifyOptions


def valid_cases() -> list[Valid]:
    return [
        Valid(
            "gosev",
            evidence("snp/gosev_attestation.bin", "snp/gosev_vcek.testcer", "snp/gosev_ask_ark_milan.pem"),
            VerifyOptions(now=GOSEV_TIME, roots=ark("milan")),
        ),
        Valid(
            "virtee",
            evidence("snp/virtee_report_milan.bin", "snp/virtee_vcek_milan.der", "snp/virtee_milan_ask.pem"),
            VerifyOptions(now=datetime(2024, 1, 1, tzinfo=UTC), roots=ark("milan")),
        ),
        Valid(
            "trustee",
            evidence("snp/trustee_test-report.bin", "snp/trustee_test-vcek.der", "snp/gosev_ask_ark_milan.pem"),
            VerifyOptions(now=datetime(2024, 1, 1, tzinfo=UTC), roots=ark("milan")),
        ),
        Valid(
            "vlek",
            evidence(
                "snp/trustee_test-vlek-report.bin", "snp/trustee_test-vlek.der", "snp/gosev_ask_ark_milan_vlek.pem"
            ),
            VerifyOptions(now=VLEK_TIME, roots=ark("milan")),
        ),
        Valid(
            "genoa",
            evidence(
                "snp/trustee_e2e_snp_report_RECONSTRUCTED.bin",
                "snp/trustee_e2e_snp_vcek_extracted.der",
                "snp/gosev_ask_ark_genoa.pem",
            ),
            VerifyOptions(now=datetime(2026, 1, 1, tzinfo=UTC), roots=ark("genoa")),
        ),
        Valid(
            "azure",
            evidence("snp/trustee_az-snp-vtpm_hcl-report.bin", "snp/trustee_az-snp-vtpm_vcek.pem"),
            VerifyOptions(now=datetime(2024, 1, 1, tzinfo=UTC), roots=ark("milan")),
        ),
    ]

"""SEV-SNP verification throughput, with and without the certificate-chain cache, against the raw signature check.

The baseline is what no verifier can skip: one ECDSA P-384 verification of the same report with ``cryptography``.
The uncached verifier adds parsing, the AMD chain (three RSA-4096 PSS signatures) and the TCB/hwID checks; the
cached one re-checks only validity times for a chain it has seen. Uses go-sev-guest's real Milan report.

    .venv/bin/python bench/attest_snp.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cloister.attest.cache import ChainCache
from cloister.attest.der import parse_certificate, parse_pem_certificates
from cloister.attest.pki import public_key
from cloister.attest.snp import Evidence, VerifyOptions, verify
from cloister.attest.snp.certs import load_certificates
from cloister.attest.snp.report import parse_report
from rates import rate as measure_rate

VECTORS = Path(os.environ.get("CLOISTER_VECTORS", Path(__file__).resolve().parents[1].parent / "shared" / "vectors"))
NOW = datetime(2023, 1, 1, tzinfo=UTC)


def run(seconds: float) -> list[dict[str, object]]:
    """One row per case: verifications per second and the ratio to the raw signature check."""
    snp = VECTORS / "snp"
    report = (snp / "gosev_attestation.bin").read_bytes()
    ders = [
        (snp / "gosev_vcek.testcer").read_bytes(),
        *load_certificates((snp / "gosev_ask_ark_milan.pem").read_bytes()),
    ]
    evidence = Evidence(report=report, certificates=tuple(ders))
    roots = tuple(parse_pem_certificates((VECTORS / "roots" / "amd_ark_milan.pem").read_bytes()))
    plain, cached = VerifyOptions(now=NOW, roots=roots), VerifyOptions(now=NOW, roots=roots, cache=ChainCache())

    parsed = parse_report(report)
    key = public_key(parse_certificate(ders[0]))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    signature = encode_dss_signature(parsed.signature_r, parsed.signature_s)

    def raw() -> None:
        key.verify(signature, parsed.signed, ec.ECDSA(hashes.SHA384()))

    baseline = measure_rate(raw, seconds)
    rows: list[dict[str, object]] = [{"case": "raw ECDSA P-384 (cryptography)", "per_second": baseline, "ratio": 1.0}]
    for name, options in (("snp verify, no chain cache", plain), ("snp verify, chain cache", cached)):
        rate = measure_rate(lambda options=options: verify(evidence, options), seconds)  # type: ignore[misc]
        rows.append({"case": name, "per_second": rate, "ratio": rate / baseline})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case (default 2)")
    args = parser.parse_args()
    print(f"{'case':34}{'verifications/s':>18}{'vs raw':>9}")
    for row in run(args.seconds):
        print(f"{row['case']:34}{row['per_second']:18.0f}{row['ratio']:9.2f}")


if __name__ == "__main__":
    main()

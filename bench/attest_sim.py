"""Sim evidence and composite-TCB verification per second, with and without the chain cache, against the raw check.

The baseline is what no verifier can skip: one ECDSA P-384 verification of the report's signature, done directly
with ``cryptography``. A sim verification adds parsing and the chip chain (one more P-384 signature, plus the
root's self-signature); the cache keeps only the validity check of a chain seen before. The TCB rows appraise a
whole devnet TCB (CPU and GPU reports, bindings, the devnet policy).

    .venv/bin/python bench/attest_sim.py [--seconds 2]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cloister.attest import sim
from cloister.attest.cache import ChainCache
from cloister.attest.pki import public_key
from cloister.attest.policy import AppraisalPolicy
from cloister.attest.sim.report import parse_report
from cloister.attest.tcb import appraise, build_sim_tcb
from cloister.crypto.identity import Identity
from rates import rate as measure_rate

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def run(seconds: float) -> list[dict[str, object]]:
    """One row per case: verifications per second and the ratio to the raw signature check."""
    vendor = sim.SimVendor.generate(now=NOW)
    chip, gpu = vendor.issue_chip("bench-cpu", now=NOW), vendor.issue_chip("bench-gpu", kind="gpu", now=NOW)
    report = chip.cpu_report(bytes(64), measurement=bytes(48))
    evidence = chip.evidence(report)
    roots = (vendor.certificate,)
    plain, cached = sim.VerifyOptions(now=NOW, roots=roots), sim.VerifyOptions(now=NOW, roots=roots, cache=ChainCache())

    parsed = parse_report(report)
    key = public_key(chip.certificate)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    signature = encode_dss_signature(
        int.from_bytes(parsed.signature[:48], "big"), int.from_bytes(parsed.signature[48:], "big")
    )

    def raw() -> None:
        key.verify(signature, parsed.signed, ec.ECDSA(hashes.SHA384()))

    nonce = bytes(32)
    tcb = build_sim_tcb(chip, gpu, loader=Identity.generate().public, nonce=nonce, specs={}, measurement=bytes(48))
    policy = AppraisalPolicy.packaged("devnet")

    baseline = measure_rate(raw, seconds)
    rows: list[dict[str, object]] = [{"case": "raw ECDSA P-384 (cryptography)", "per_second": baseline, "ratio": 1.0}]
    for name, options in (("sim verify, no chain cache", plain), ("sim verify, chain cache", cached)):
        rate = measure_rate(lambda options=options: sim.verify(evidence, options), seconds)  # type: ignore[misc]
        rows.append({"case": name, "per_second": rate, "ratio": rate / baseline})
    rate = measure_rate(
        lambda: appraise(tcb, policy, now=NOW, expected_nonce=nonce, roots_by_platform={"sim": roots}), seconds
    )
    rows.append({"case": "sim TCB appraisal (CPU + GPU)", "per_second": rate, "ratio": rate / baseline})
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

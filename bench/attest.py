"""Attestation verification throughput on every platform, against the raw signature check of the same evidence.

Runs each platform's benchmark (``bench/attest_<platform>.py``) and prints one table: verifications per second
without and with the certificate-chain cache, next to ``cryptography`` verifying the evidence's own signature
(the least any verifier must do), and the ratio.

    .venv/bin/python bench/attest.py [--seconds 2]
"""

from __future__ import annotations

import argparse

import attest_nvgpu
import attest_sim
import attest_snp
import attest_tdx

PLATFORMS = {"snp": attest_snp, "tdx": attest_tdx, "nvgpu": attest_nvgpu, "sim": attest_sim}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    print("| platform | case | verifications/s | vs raw signature |")
    print("|---|---|---:|---:|")
    for name, module in PLATFORMS.items():
        for row in module.run(args.seconds):
            case = " — ".join(str(row[key]) for key in ("case", "mode") if key in row)
            per_second = float(row.get("per_second", row.get("per_s", 0.0)))  # type: ignore[arg-type]
            ratio = row["ratio"] if "ratio" in row else 1 / float(row["cost_in_signatures"])  # type: ignore[arg-type]
            print(f"| {name} | {case} | {per_second:.0f} | {float(ratio):.2f} |")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()

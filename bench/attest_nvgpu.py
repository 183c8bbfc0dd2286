"""NVIDIA GPU evidence verification per second, with and without the chain cache, against the raw signature check.

The baseline is the one operation no verifier can skip: ECDSA P-384 over request ‖ response with the leaf's key,
done directly with ``cryptography``. The ratio says how many such signature checks one full verification costs
(parsing, the five-certificate chain, FWID and nonce bindings, and for the RIM case two XML-DSig RIMs and the
measurement comparison). Reads the real vectors from ``$CLOISTER_VECTORS`` (default ``../shared/vectors``).

    .venv/bin/python bench/attest_nvgpu.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cloister.attest import nvgpu
from cloister.attest.nvgpu.evidence import read_certificates
from cloister.attest.nvgpu.spdm import parse_hex_report, parse_report
from cloister.attest.pki import public_key
from rates import compare_modes, print_modes

VECTORS = Path(os.environ.get("CLOISTER_VECTORS", Path(__file__).resolve().parents[1].parent / "shared" / "vectors"))
NV = VECTORS / "nvgpu"


def _one(report: str, chain: str, *rims: str) -> nvgpu.Evidence:
    gpu = nvgpu.GpuEvidence(parse_hex_report((NV / report).read_bytes()), read_certificates((NV / chain).read_bytes()))
    return nvgpu.Evidence((gpu,), tuple((NV / name).read_bytes() for name in rims))


def _cases() -> list[tuple[str, nvgpu.Evidence, datetime | None]]:
    return [
        ("1 H100", _one("nvtrust_hopperAttestationReport.txt", "nvtrust_hopperCertChain.txt"), None),
        (
            "8 H100 (evidence list)",
            nvgpu.Evidence.from_json(json.loads((NV / "nvtrust_gpu_evidence.json").read_text())),
            None,
        ),
        (
            "1 H100 + driver and VBIOS RIMs",
            _one(
                "nvtrust_v2.0.0_attestationReport.txt",
                "nvtrust_v2.0.0_gpuAkCertChain.txt",
                "nvtrust_Driver_RIM_test_no_gpu.swidtag",
                "nvtrust_1010_0200_882_96005E0001_test_no_gpu.swidtag",
            ),
            datetime(2024, 1, 1, tzinfo=UTC),
        ),
    ]


def _raw_signature_check(evidence: nvgpu.Evidence) -> Callable[[], None]:
    """Every GPU's report signature verified with ``cryptography`` directly, key and DER signature prepared."""
    prepared = []
    for gpu in evidence.gpus:
        report = parse_report(gpu.report)
        key = public_key(gpu.certificates[0])
        assert isinstance(key, ec.EllipticCurvePublicKey)
        signature = report.response.signature
        der = encode_dss_signature(int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big"))
        prepared.append((key, der, report.signed))

    def check() -> None:
        for key, der, signed in prepared:
            key.verify(der, signed, ec.ECDSA(hashes.SHA384()))

    return check


def run(seconds: float) -> list[dict[str, object]]:
    """One row per case and mode; ``cost_in_signatures`` = raw rate / this rate."""
    rows: list[dict[str, object]] = []
    for case, evidence, now in _cases():
        modes: dict[str, object] = {
            "no cache": nvgpu.VerifyOptions(now=now),
            "chain cache": nvgpu.VerifyOptions(now=now, cache=nvgpu.ChainCache()),
        }
        verify = lambda options, evidence=evidence: nvgpu.verify(evidence, options)  # noqa: E731
        rows += compare_modes(case, "raw ECDSA P-384", _raw_signature_check(evidence), verify, modes, seconds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each measurement")
    print_modes(run(parser.parse_args().seconds))


if __name__ == "__main__":
    main()

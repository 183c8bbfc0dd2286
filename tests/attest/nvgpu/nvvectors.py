"""The NVIDIA GPU vectors of MANIFEST §3 as evidence, with the times their outcomes are stated for."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from tests.attest.vectors import read

from cloister.attest.nvgpu import Evidence, GpuEvidence
from cloister.attest.nvgpu.evidence import read_certificates
from cloister.attest.nvgpu.spdm import parse_hex_report

NV = "nvgpu/"
RIM_TIME = datetime(2024, 1, 1, tzinfo=UTC)
"""Inside every nvtrust RIM signer's window (the L4 signers expire in June 2025)."""
NVSDK_RIM_TIME = datetime(2025, 6, 1, tzinfo=UTC)
"""Inside the nvsdk 550.144.03 RIM signer's window (2024-12-30 → 2026-12-30)."""
NONCE_931D = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")

DRIVER_RIM_TEST = "nvtrust_Driver_RIM_test_no_gpu.swidtag"
VBIOS_RIM_TEST = "nvtrust_1010_0200_882_96005E0001_test_no_gpu.swidtag"
VBIOS_RIM_PROD = "nvtrust_1010_0200_882_96005E0001_PROD.swidtag"


def rim(name: str) -> bytes:
    return read(NV + name)


@cache
def gpu(report: str, chain: str) -> GpuEvidence:
    """One hex report file with its PEM chain file, read in place."""
    return GpuEvidence(parse_hex_report(read(NV + report)), read_certificates(read(NV + chain)))


def evidence(report: str, chain: str, *rims: str) -> Evidence:
    return Evidence((gpu(report, chain),), tuple(rim(name) for name in rims))


def evidence_list(name: str) -> Evidence:
    """NVIDIA's JSON evidence list."""
    return Evidence.from_json(json.loads(read(NV + name)))


@dataclass(frozen=True)
class Pair:
    """A report with its chain and what MANIFEST §3 says verifies about it."""

    report: str
    chain: str
    nonce: str
    driver: str
    vbios: str
    fwid: str | None


VALID = [
    Pair(
        "nvtrust_hopperAttestationReport.txt",
        "nvtrust_hopperCertChain.txt",
        "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
        "550.90.07",
        "96.00.9F.00.01",
        "f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d",
    ),
    Pair(
        "nvtrust_v2.0.0_attestationReport.txt",
        "nvtrust_v2.0.0_gpuAkCertChain.txt",
        "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e",
        "545.00",
        "96.00.5E.00.01",
        None,
    ),
    Pair(
        "nvsdk_hopperAttestationReport.txt",
        "nvsdk_hopperCertChain.txt",
        "5bb22e377702d4e1e8215a903ba094826b9ac7f731dee1fe8102958bf2840aca",
        "580.159.03",
        "96.00.74.00.20",
        "f1ae7d0093a3f5689cced58045c9744f94eb2aa4ddca88135197fb41a7be45576c2881cf920e2cbcc090b1cb921f7b2d",
    ),
    Pair(
        "nvsdk_sad_hopperAttestationReport.txt",
        "nvsdk_sad_hopperCertChain.txt",
        "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66",
        "535.86.09",
        "96.00.5E.00.01",
        None,
    ),
    Pair(
        "nvsdk_sad_hopperAttestationReportExpired.txt",
        "nvsdk_sad_hopperCertChainExpired.txt",
        NONCE_931D.hex(),
        "570.124.03",
        "96.00.5E.00.04",
        "e9960d6a289c80281e29b85287ca5ec342297589d2f5a95aef82cf3fd2520f3370756e5d63633c2b2c9c1f10e7775033",
    ),
    Pair(
        "nvsdk_sad_blackwellAttestationReport.txt",
        "nvsdk_sad_blackwellCertChain.txt",
        NONCE_931D.hex(),
        "575.32",
        "97.00.88.00.0F",
        "d090cab1b6e6ffddca83d1781e25b3f040fa1f3c7608230cb5f41b1c1b99f5f748349e59d0ef8eb830c9bc79ccf77502",
    ),
    Pair(
        "trustee_hopper_coco_report1.txt",
        "trustee_hopper_coco_certs1.txt",
        "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec",
        "580.95.05",
        "96.00.74.00.1A",
        "f1ae7d0093a3f5689cced58045c9744f94eb2aa4ddca88135197fb41a7be45576c2881cf920e2cbcc090b1cb921f7b2d",
    ),
]

"""NVIDIA GPU attestation (Hopper, Blackwell): SPDM measurement reports, device chains, RIMs.

The uniform platform API: ``PLATFORM``, :class:`Evidence`, :class:`VerifyOptions`, :func:`verify` → :class:`Claims`,
:class:`Policy` and :func:`validate`.
"""

from cloister.attest.nvgpu.chain import ChainCache
from cloister.attest.nvgpu.claims import Claims, GpuClaims, RimUsed
from cloister.attest.nvgpu.evidence import PLATFORM, Evidence, GpuEvidence
from cloister.attest.nvgpu.policy import Policy, validate
from cloister.attest.nvgpu.rim import Comparison, Mismatch, Rim, compare, parse_rim, verify_rim
from cloister.attest.nvgpu.verify import VerifyOptions, verify

__all__ = [
    "PLATFORM",
    "ChainCache",
    "Claims",
    "Comparison",
    "Evidence",
    "GpuClaims",
    "GpuEvidence",
    "Mismatch",
    "Policy",
    "Rim",
    "RimUsed",
    "VerifyOptions",
    "compare",
    "parse_rim",
    "validate",
    "verify",
    "verify_rim",
]

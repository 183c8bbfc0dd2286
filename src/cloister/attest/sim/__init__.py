"""The ``sim`` platform: a software TEE vendor for devnets, verified and validated like the real platforms.

Sim evidence is authentic only relative to the root a devnet created; it proves nothing about hardware. Only an
appraisal policy with ``allow_simulated = true`` accepts it (see :mod:`cloister.attest.policy`).
"""

from cloister.attest.sim.evidence import PLATFORM, Claims, Evidence, VerifyOptions, verify
from cloister.attest.sim.identity import ChipIdentity
from cloister.attest.sim.policy import Policy, validate
from cloister.attest.sim.vendor import SimChip, SimVendor

__all__ = [
    "PLATFORM",
    "ChipIdentity",
    "Claims",
    "Evidence",
    "Policy",
    "SimChip",
    "SimVendor",
    "VerifyOptions",
    "validate",
    "verify",
]

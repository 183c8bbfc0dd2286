"""AMD SEV-SNP attestation: reports v2-v5 from Milan, Genoa and Turin, VCEK or VLEK, raw or Azure-HCL-wrapped.

:func:`verify` proves a report authentic (AMD chain, TCB and chip binding, signature) and returns :class:`Claims`;
:func:`validate` judges the claims against a :class:`Policy`.
"""

from cloister.attest.snp.evidence import PLATFORM, Evidence
from cloister.attest.snp.policy import Policy, validate
from cloister.attest.snp.verify import Claims, VerifyOptions, verify

__all__ = ["PLATFORM", "Claims", "Evidence", "Policy", "VerifyOptions", "validate", "verify"]

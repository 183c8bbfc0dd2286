"""Intel TDX: quote v4/v5 verification to the Intel SGX Root CA, Intel PCS collateral, CCEL RTMR replay, policy.

The uniform platform API: :data:`PLATFORM`, :class:`Evidence`, :class:`VerifyOptions`, :func:`verify` →
:class:`Claims`, :class:`Policy`, :func:`validate`.
"""

from cloister.attest.tdx.ccel import replay_ccel
from cloister.attest.tdx.claims import Claims
from cloister.attest.tdx.evidence import PLATFORM, Collateral, Evidence
from cloister.attest.tdx.policy import Policy, validate
from cloister.attest.tdx.quote import Quote, parse_quote
from cloister.attest.tdx.tcb import TcbVerdict
from cloister.attest.tdx.verify import TimeSet, VerifyOptions, verify

__all__ = [
    "PLATFORM",
    "Claims",
    "Collateral",
    "Evidence",
    "Policy",
    "Quote",
    "TcbVerdict",
    "TimeSet",
    "VerifyOptions",
    "parse_quote",
    "replay_ccel",
    "validate",
    "verify",
]

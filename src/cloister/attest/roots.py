"""Vendor roots of trust, pinned by the SHA-256 fingerprint of their DER encoding.

Evidence carries its certificate chain up to (or including) the vendor's self-signed root; a root is trusted only
if its fingerprint is pinned here or the caller passes root certificates explicitly (tests, private PKIs, the
simulator's per-devnet root). Fingerprints are public facts published by each vendor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from cloister.attest.der import Certificate

AMD_ARK_MILAN = "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
AMD_ARK_GENOA = "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"
AMD_ARK_TURIN = "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"
INTEL_SGX_ROOT_CA = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
NVIDIA_DEVICE_IDENTITY_CA = "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
NVIDIA_CORIM_SIGNING_ROOT_CA = "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1"

AMD_ARKS = frozenset({AMD_ARK_MILAN, AMD_ARK_GENOA, AMD_ARK_TURIN})


def fingerprint(cert: Certificate) -> str:
    return hashlib.sha256(cert.der).hexdigest()


def pinned(candidates: Iterable[Certificate], fingerprints: Iterable[str]) -> list[Certificate]:
    """The certificates among ``candidates`` whose fingerprint is pinned: the roots a verifier may anchor to."""
    allowed = frozenset(fingerprints)
    return [cert for cert in candidates if fingerprint(cert) in allowed]


def choose_roots(
    explicit: Sequence[Certificate] | None, carried: Iterable[Certificate], fingerprints: Iterable[str]
) -> list[Certificate]:
    """Explicit roots win (tests, private PKIs); otherwise the pinned vendor roots found among the carried certs."""
    return list(explicit) if explicit is not None else pinned(carried, fingerprints)

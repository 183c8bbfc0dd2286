"""Certificate chains for GPU evidence and RIMs: which roots to anchor to, and a cache of what already verified.

A verifier checks the same machine again on every heartbeat: the same chains (eight GPUs share four certificates)
and the same RIMs. Caching a verified result, keyed by the exact bytes and the roots, saves the ECDSA and XML-DSig
work without weakening the validity-window check, which runs again on every call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cloister.attest.der import Certificate
from cloister.attest.pki import verify_chain
from cloister.attest.roots import choose_roots
from cloister.errors import CertificateInvalid


@dataclass(frozen=True)
class _Entry:
    value: object
    valid_from: datetime
    valid_until: datetime


ALWAYS = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
"""The window of a result that does not depend on time (a parse)."""


def window(certificates: Sequence[Certificate]) -> tuple[datetime, datetime]:
    """When every one of ``certificates`` is valid: what a cached verification result stays good for."""
    return max(cert.not_before for cert in certificates), min(cert.not_after for cert in certificates)


class ChainCache:
    """An LRU of verification results (chains, RIMs) keyed by the exact bytes verified and the roots used.

    A hit is returned only while ``now`` lies inside the validity window of every certificate involved, so a cached
    result never outlives a certificate; what is saved is the signature work, not a check.
    """

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError("a chain cache holds at least one entry")
        self.size = size
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, now: datetime) -> object | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        return entry.value if entry.valid_from <= now <= entry.valid_until else None

    def put(self, key: Hashable, value: object, valid_from: datetime, valid_until: datetime) -> None:
        with self._lock:
            self._entries[key] = _Entry(value, valid_from, valid_until)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def verify(self, chain: Sequence[Certificate], roots: Sequence[Certificate], now: datetime) -> Certificate:
        """Same contract as :func:`cloister.attest.pki.verify_chain`."""
        key = ("chain", tuple(cert.der for cert in chain), tuple(root.der for root in roots))
        hit = self.get(key, now)
        if isinstance(hit, Certificate):
            return hit
        anchor = verify_chain(chain, roots, now=now)
        self.put(key, anchor, *window([*chain, anchor]))
        return anchor

    def __len__(self) -> int:
        return len(self._entries)


def anchored(
    chain: Sequence[Certificate],
    explicit_roots: Sequence[Certificate] | None,
    pinned_fingerprint: str,
    *,
    now: datetime,
    cache: ChainCache | None,
    what: str,
    root_name: str,
    check: str,
) -> Certificate:
    """Verify ``chain`` (leaf first) to the explicit roots, or else to the pinned vendor root it carries.

    Failures raise :class:`CertificateInvalid` named ``check``, with the reason (expired, wrong issuer, …) inside.
    """
    roots = choose_roots(explicit_roots, chain, [pinned_fingerprint])
    if not roots:
        raise CertificateInvalid(
            f"{what} does not end at {root_name} (its last certificate is {chain[-1]}, issued by "
            f"{chain[-1].issuer}); it is not NVIDIA's, or the root is missing from the chain",
            check=check,
        )
    try:
        return cache.verify(chain, roots, now) if cache is not None else verify_chain(chain, roots, now=now)
    except CertificateInvalid as exc:
        raise CertificateInvalid(f"{what}: {exc.message}", check=check) from None

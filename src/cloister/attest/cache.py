"""A cache of certificate chains whose signatures already verified, for verifiers that see the same chain often.

Verifying a vendor chain costs several RSA/ECDSA verifications; a node appraising many reports from one machine
sees the same chain each time. The cache remembers that the signatures link up to a given root (validity times are
checked again on every call, against that call's ``now``), and the parsed certificates themselves.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime

from cloister.attest.der import Certificate, parse_certificate
from cloister.attest.pki import check_validity, verify_chain


class ChainCache:
    """LRU of (chain DER, roots DER) -> the root the chain verified to. Thread-safe."""

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError("a chain cache needs room for at least one chain")
        self._size = size
        self._entries: OrderedDict[tuple[tuple[bytes, ...], tuple[bytes, ...]], Certificate] = OrderedDict()
        self._parsed: OrderedDict[bytes, Certificate] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def verify(self, chain: Sequence[Certificate], roots: Sequence[Certificate], *, now: datetime) -> Certificate:
        """:func:`~cloister.attest.pki.verify_chain`, skipping the signature checks for a chain seen before."""
        key = (tuple(cert.der for cert in chain), tuple(sorted(root.der for root in roots)))
        with self._lock:
            anchor = self._entries.get(key)
            if anchor is not None:
                self._entries.move_to_end(key)
                self.hits += 1
        if anchor is None:
            anchor = verify_chain(chain, roots, now=now)
            with self._lock:
                self.misses += 1
                self._entries[key] = anchor
                if len(self._entries) > self._size:
                    self._entries.popitem(last=False)
            return anchor
        for cert in [*chain, anchor]:
            check_validity(cert, now)
        return anchor

    def certificate(self, der: bytes) -> Certificate:
        """:func:`~cloister.attest.der.parse_certificate`, remembered: parsing costs more than an ECDSA check."""
        with self._lock:
            cert = self._parsed.get(der)
            if cert is not None:
                self._parsed.move_to_end(der)
                return cert
        cert = parse_certificate(der)
        with self._lock:
            self._parsed[der] = cert
            if len(self._parsed) > 4 * self._size:
                self._parsed.popitem(last=False)
        return cert

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._parsed.clear()

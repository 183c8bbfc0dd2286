"""Sources for blob tests: generated data (never a huge bytes object) that also answers with short reads."""

from __future__ import annotations

import hashlib
import random

from cloister.crypto.digest import format_digest

# Odd read sizes, so every store must refill short reads rather than trust one read per request.
_READ_SIZES = (65_521, (1 << 20) + 3, 300_007, 1)
_BLOCK = 1 << 16


class PatternSource:
    """``size`` pseudo-random bytes fixed by ``seed``, produced on demand; remembers the digest of what it gave."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.left = size
        self._random = random.Random(seed)
        self._hash = hashlib.sha256()
        self._reads = 0
        self._block = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        cap = _READ_SIZES[self._reads % len(_READ_SIZES)]
        self._reads += 1
        wanted = min(self.left if size is None or size < 0 else size, cap, self.left)
        parts = []
        while wanted > 0:
            if not self._block:  # fixed-size blocks: the bytes do not depend on how the reader asks for them
                self._block = memoryview(self._random.randbytes(_BLOCK))
            part, self._block = self._block[:wanted], self._block[wanted:]
            parts.append(part)
            wanted -= len(part)
        data = b"".join(parts)
        self.left -= len(data)
        self._hash.update(data)
        return data

    @property
    def digest(self) -> str:
        """Digest of every byte handed out so far (of the whole pattern once exhausted)."""
        return format_digest(self._hash.digest())


class FailingSource(PatternSource):
    """Hands out ``fail_after`` bytes, then fails like a broken disk instead of ending."""

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        if not data:
            raise OSError(5, "Input/output error")
        return data


def pattern_digest(size: int, seed: int = 0) -> str:
    """The digest a ``PatternSource(size, seed)`` ends with."""
    source = PatternSource(size, seed)
    while source.read():
        pass
    return source.digest

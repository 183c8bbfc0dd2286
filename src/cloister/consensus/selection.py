"""Verifiable replica selection: a seeded permutation of the candidates that anyone can recompute.

The seed hashes the ledger head (which the gateway cannot choose), the request digest and a client nonce (which
the gateway does not know in advance), so the gateway cannot steer a request to replicas of its liking. The
permutation is a Fisher-Yates shuffle driven by a SHA-256 counter stream, with rejection sampling so every
permutation is exactly equally likely (no modulo bias); cross's coin is the next draw from the same stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cloister.consensus.modes import CROSS, PPM, ConsensusMode
from cloister.consensus.wire import check_ids, check_text, malformed
from cloister.errors import NotEnoughReplicas

SELECTION_DOMAIN = b"cloister/selection/v1"
MAX_CANDIDATES = 1024
MAX_NONCE = 64
_WORD = 8
_SPACE = 1 << (8 * _WORD)


def selection_seed(head_hash: str, request_digest: str, client_nonce: bytes) -> bytes:
    """SHA-256 of ``domain NUL head_hash NUL request_digest NUL client_nonce`` (the nonce last: it may hold NUL)."""
    check_text(head_hash, "head hash")
    check_text(request_digest, "request digest")
    if not isinstance(client_nonce, bytes) or not 0 < len(client_nonce) <= MAX_NONCE:
        malformed(f"a client nonce is 1 to {MAX_NONCE} bytes")
    return hashlib.sha256(
        b"\x00".join((SELECTION_DOMAIN, head_hash.encode(), request_digest.encode(), client_nonce))
    ).digest()


class _Stream:
    """Uniform integers from ``SHA-256(seed || counter)`` blocks, 64 bits at a time."""

    def __init__(self, seed: bytes) -> None:
        self._seed, self._counter, self._buffer = seed, 0, b""

    def _word(self) -> int:
        if len(self._buffer) < _WORD:
            self._buffer += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        word, self._buffer = self._buffer[:_WORD], self._buffer[_WORD:]
        return int.from_bytes(word, "big")

    def below(self, bound: int) -> int:
        """A uniform integer in ``[0, bound)``: words from the biased top of the range are drawn again."""
        limit = _SPACE - _SPACE % bound
        while True:
            word = self._word()
            if word < limit:
                return word % bound


@dataclass(frozen=True)
class Selection:
    """``order`` is the full seeded permutation of the (sorted) candidates; the rest are prefixes of it."""

    candidates: tuple[str, ...]
    order: tuple[str, ...]
    selected: tuple[str, ...]
    cross_triggered: bool
    referees: tuple[str, ...]

    @property
    def spares(self) -> tuple[str, ...]:
        """Candidates neither selected nor referee, in seeded order: re-sampling takes them from the front."""
        used = set(self.selected) | set(self.referees)
        return tuple(machine for machine in self.order if machine not in used)

    def resample(self, already: int = 0) -> str:
        """The machine replacing a timed-out one, after ``already`` earlier replacements for this request."""
        spares = self.spares
        if already >= len(spares):
            raise NotEnoughReplicas(
                f"no live replica is left to replace a timed-out one ({len(self.candidates)} candidates, all "
                "used); retry later, when the deployment has replaced its lost replicas"
            )
        return spares[already]


def select(seed: bytes, candidates: Sequence[str], mode: ConsensusMode) -> Selection:
    """Who runs a request under ``mode``; needs at least ``mode.max_replicas`` candidates."""
    if not isinstance(seed, bytes) or len(seed) != hashlib.sha256().digest_size:
        malformed("a selection seed is 32 bytes (see selection_seed)")
    pool = tuple(sorted(candidates))
    check_ids(pool, "candidates", MAX_CANDIDATES)
    if len(pool) < mode.max_replicas:
        raise NotEnoughReplicas(
            f"consensus mode {mode} needs {mode.max_replicas} live replicas but the deployment has {len(pool)}; "
            "choose a mode with fewer replicas or wait for the deployment to grow",
            needed=mode.max_replicas,
            available=len(pool),
        )
    stream = _Stream(seed)
    order = list(pool)
    for i in range(len(order) - 1, 0, -1):
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]
    triggered = mode.kind == CROSS and stream.below(PPM) < mode.p_ppm
    return Selection(
        candidates=pool,
        order=tuple(order),
        selected=tuple(order[: mode.first_wave]),
        cross_triggered=triggered,
        referees=tuple(order[1 : 1 + mode.n]) if triggered else (),
    )

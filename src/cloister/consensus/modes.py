"""Consensus modes: how many replicas run a request and who checks whom.

``single`` (one replica, attestation only), ``sampling:N`` (N replicas, all must agree), ``cross:p,N`` (one
replica answers; with probability p, N others re-execute) and ``obfuscated:N`` (N+1 replicas in parallel, none
told who else runs). The probability is kept in parts per million so a mode never holds a float.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from cloister.errors import InvalidConsensusMode

ModeKind = Literal["single", "sampling", "cross", "obfuscated"]
SINGLE: Final = "single"
SAMPLING: Final = "sampling"
CROSS: Final = "cross"
OBFUSCATED: Final = "obfuscated"
MODE_KINDS: Final[tuple[ModeKind, ...]] = (SINGLE, SAMPLING, CROSS, OBFUSCATED)
PPM: Final = 1_000_000
MAX_N: Final = 1024
"""Sanity bound on N; a deployment's own replica count (ledger ``max_replicas``) is the real limit."""

_COUNT = r"([0-9]{1,4})"
_PATTERNS: Final[dict[ModeKind, re.Pattern[str]]] = {
    SINGLE: re.compile(r"^single$"),
    SAMPLING: re.compile(rf"^sampling:{_COUNT}$"),
    CROSS: re.compile(rf"^cross:\s*([0-9.]+)\s*,\s*{_COUNT}$"),
    OBFUSCATED: re.compile(rf"^obfuscated:{_COUNT}$"),
}
_PROBABILITY_RE = re.compile(r"^(?:0|1)(?:\.[0-9]{1,6})?$")
_HELP = "use single, sampling:N, cross:p,N (0 <= p <= 1, like cross:0.1,2) or obfuscated:N, with N >= 1"


@dataclass(frozen=True)
class ConsensusMode:
    """A parsed mode; ``str(mode)`` is its one canonical spelling."""

    kind: ModeKind
    n: int
    p_ppm: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MODE_KINDS:
            raise InvalidConsensusMode(f"unknown consensus mode {self.kind!r:.40}; {_HELP}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 1 <= self.n <= MAX_N:
            raise InvalidConsensusMode(f"N must be an integer from 1 to {MAX_N}, got {self.n!r:.40}; {_HELP}")
        if self.kind == SINGLE and self.n != 1:
            raise InvalidConsensusMode(f"single runs exactly one replica, not {self.n}; {_HELP}")
        if isinstance(self.p_ppm, bool) or not isinstance(self.p_ppm, int) or not 0 <= self.p_ppm <= PPM:
            raise InvalidConsensusMode(f"p_ppm must be an integer from 0 to {PPM}, got {self.p_ppm!r:.40}")
        if self.kind != CROSS and self.p_ppm != 0:
            raise InvalidConsensusMode(f"only cross takes a probability, not {self.kind}; {_HELP}")

    @property
    def first_wave(self) -> int:
        """Replicas run at once: single 1, sampling N, cross 1 (referees come later), obfuscated N+1."""
        if self.kind == SAMPLING:
            return self.n
        if self.kind == OBFUSCATED:
            return self.n + 1
        return 1

    @property
    def max_replicas(self) -> int:
        """The most replicas one request can involve: the first wave, plus cross's N referees."""
        return 1 + self.n if self.kind == CROSS else self.first_wave

    @property
    def probability(self) -> Decimal:
        """Cross's re-execution probability p as an exact decimal."""
        return Decimal(self.p_ppm) / PPM

    def __str__(self) -> str:
        if self.kind == SINGLE:
            return SINGLE
        if self.kind == CROSS:
            return f"{CROSS}:{_decimal_text(self.probability)},{self.n}"
        return f"{self.kind}:{self.n}"


def parse_mode(text: str) -> ConsensusMode:
    """Parse a mode as users write it (``sampling:3``, ``cross:0.01,1``); refuse anything else."""
    if not isinstance(text, str):
        raise InvalidConsensusMode(f"a consensus mode is text, got {type(text).__name__}; {_HELP}")
    spelled = text.strip()
    for kind, pattern in _PATTERNS.items():
        match = pattern.match(spelled)
        if match is None:
            continue
        if kind == SINGLE:
            return ConsensusMode(SINGLE, 1)
        if kind == CROSS:
            return ConsensusMode(CROSS, int(match.group(2)), _parse_probability(match.group(1)))
        return ConsensusMode(kind, int(match.group(1)))
    raise InvalidConsensusMode(f"{text!r:.60} is not a consensus mode; {_HELP}")


def _parse_probability(text: str) -> int:
    if not _PROBABILITY_RE.match(text) or Decimal(text) > 1:
        raise InvalidConsensusMode(
            f"p must be a decimal from 0 to 1 with at most 6 decimal places, got {text!r:.40}; {_HELP}"
        )
    return int(Decimal(text) * PPM)


def _decimal_text(value: Decimal) -> str:
    """``0.01``, ``0``, ``1``: the shortest plain spelling, so modes round-trip through text."""
    return format(value.normalize(), "f")

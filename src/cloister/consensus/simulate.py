"""Monte-Carlo simulation of the consensus modes on a network of machines, to check the closed forms.

The same protocol as :mod:`cloister.consensus.security`, played out request by request (vectorised with numpy):
draw replicas without replacement from ``nodes`` machines, let the adversary's machines vote by their strategy,
settle disputes with referees and a strict majority. Each estimate comes with a Wilson confidence
interval, next to the exact value, so a wrong formula (or a wrong simulator) shows up as a miss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from fractions import Fraction
from statistics import NormalDist
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from cloister.consensus.modes import CROSS, PPM, ConsensusMode
from cloister.consensus.security import DEFAULT_MAX_REFEREES, Adversary, Network, SecurityReport, analyse
from cloister.errors import InvalidAnalysis

MAX_REQUESTS: Final = 100_000_000
CHUNK: Final = 1 << 16
"""Requests simulated per numpy batch: big enough to amortise Python, small enough to keep memory flat."""
_CORRECT, _CARTEL, _SINGLE, _NONE = 0, 1, 2, -1

Progress = Callable[[int], None]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SimulationConfig:
    """One simulation: the mode, the adversary, ``nodes`` machines, ``requests`` requests and a seed."""

    mode: ConsensusMode
    adversary: Adversary
    nodes: int = 10_000
    requests: int = 1_000_000
    seed: int = 0
    max_referees: int = DEFAULT_MAX_REFEREES
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not 1 <= self.requests <= MAX_REQUESTS:
            raise InvalidAnalysis(f"requests must be from 1 to {MAX_REQUESTS:_}, got {self.requests!r:.40}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidAnalysis(f"the seed must be a non-negative integer, got {self.seed!r:.40}")
        if not 0 < self.confidence < 1:
            raise InvalidAnalysis(f"the confidence level must be between 0 and 1, got {self.confidence!r:.40}")
        self.network.check(self.mode)

    @property
    def network(self) -> Network:
        return Network(self.nodes, self.max_referees)


@dataclass(frozen=True)
class Estimate:
    """A simulated quantity: ``hits`` out of ``trials`` (a mean for ``cost_factor``), its confidence interval
    and the closed form it should match. ``value`` is None when no trial happened (e.g. no wrong vote at all)."""

    name: str
    hits: int
    trials: int
    value: float | None
    low: float | None
    high: float | None
    closed_form: Fraction | None

    @property
    def inside(self) -> bool | None:
        """Whether the closed form lies in the interval (None when either is missing)."""
        if self.closed_form is None or self.low is None or self.high is None:
            return None
        return self.low <= float(self.closed_form) <= self.high

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hits": self.hits,
            "trials": self.trials,
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "closed_form": None if self.closed_form is None else float(self.closed_form),
            "inside": self.inside,
        }


@dataclass(frozen=True)
class SimulationReport:
    config: SimulationConfig
    dishonest_nodes: int
    estimates: tuple[Estimate, ...]
    closed_form: SecurityReport

    def estimate(self, name: str) -> Estimate:
        return next(item for item in self.estimates if item.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": str(self.config.mode),
            "adversary": self.config.adversary.to_json(),
            "nodes": self.config.nodes,
            "dishonest_nodes": self.dishonest_nodes,
            "requests": self.config.requests,
            "seed": self.config.seed,
            "max_referees": self.config.max_referees,
            "confidence": self.config.confidence,
            "estimates": [item.to_json() for item in self.estimates],
        }


def wilson(hits: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion: sound near 0 and 1, where the normal interval is not."""
    if trials <= 0 or not 0 <= hits <= trials:
        raise InvalidAnalysis(f"a proportion needs 0 <= hits <= trials and trials > 0, got {hits}/{trials}")
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    phat, z2 = hits / trials, z * z
    centre = (phat + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(phat * (1 - phat) / trials + z2 / (4 * trials * trials))
    # At 0 and 1 the bounds are exactly 0 and 1; rounding would otherwise leave them a hair inside.
    return (0.0 if hits == 0 else centre - half), (1.0 if hits == trials else centre + half)


def simulate(config: SimulationConfig, progress: Progress | None = None) -> SimulationReport:
    """Run ``config.requests`` requests; ``progress`` is told how many finished after each batch."""
    rng = np.random.default_rng(config.seed)
    dishonest = config.network.dishonest_nodes(config.adversary) or 0
    bad = np.zeros(config.nodes, dtype=np.bool_)
    bad[rng.choice(config.nodes, size=dishonest, replace=False)] = True
    counts = _Counts()
    done = 0
    while done < config.requests:
        size = min(CHUNK, config.requests - done)
        counts.add(_batch(rng, bad, config, size))
        done += size
        if progress is not None:
            progress(size)
    closed = analyse(config.mode, config.adversary, config.network)
    return SimulationReport(config, dishonest, counts.estimates(closed, config.confidence), closed)


@dataclass
class _Counts:
    """Integer totals over all batches (so the result does not depend on the batch size)."""

    requests: int = 0
    wrong_vote: int = 0
    dispute: int = 0
    undetected_wrong: int = 0
    wrong_final: int = 0
    unresolved: int = 0
    honest_slashed: int = 0
    first_bad: int = 0
    caught: int = 0
    executions: int = 0
    executions_squared: int = 0

    def add(self, other: _Counts) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def estimates(self, closed: SecurityReport, confidence: float) -> tuple[Estimate, ...]:
        exact = closed.metrics()
        proportions = {
            "wrong_final": (self.wrong_final, self.requests),
            "undetected_wrong": (self.undetected_wrong, self.requests),
            "detection": (self.dispute, self.wrong_vote),
            "dispute": (self.dispute, self.requests),
            "honest_slashed": (self.honest_slashed, self.requests),
            "unresolved": (self.unresolved, self.requests),
            "caught": (self.caught, self.first_bad),
        }
        found = []
        for name, (hits, trials) in proportions.items():
            low, high = wilson(hits, trials, confidence) if trials else (None, None)
            value = hits / trials if trials else None
            found.append(Estimate(name, hits, trials, value, low, high, exact[name]))
        found.append(self._cost(exact["cost_factor"], confidence))
        return tuple(found)

    def _cost(self, exact: Fraction | None, confidence: float) -> Estimate:
        """Mean executions per request with a normal interval (the count is bounded, so the CLT holds)."""
        n = self.requests
        mean = self.executions / n
        variance = max(self.executions_squared / n - mean * mean, 0.0) * n / max(n - 1, 1)
        half = NormalDist().inv_cdf((1 + confidence) / 2) * math.sqrt(variance / n)
        return Estimate("cost_factor", self.executions, n, mean, mean - half, mean + half, exact)


def _distinct(rng: np.random.Generator, nodes: int, taken: Ints) -> Ints:
    """One more machine per row, uniform among those the row has not drawn yet (rejection sampling)."""
    column: Ints = rng.integers(0, nodes, size=int(taken.shape[0]))
    clash: Bools = (taken == column[:, None]).any(axis=1)
    while clash.any():
        rows = np.flatnonzero(clash)
        column[rows] = rng.integers(0, nodes, size=rows.size)
        clash[rows] = (taken[rows] == column[rows, None]).any(axis=1)
    return column


def _votes(rng: np.random.Generator, is_bad: Bools, adversary: Adversary) -> Ints:
    """What each drawn machine commits: the correct output, the cartel's, or a wrong guess of its own."""
    votes: Ints = np.full(is_bad.shape, _CORRECT, dtype=np.int64)
    if adversary.strategy == "colluding":
        votes[is_bad] = _CARTEL
    elif adversary.strategy == "lazy":
        wrong = rng.random(is_bad.shape) < float(adversary.wrong)
        votes[is_bad & wrong] = _SINGLE
    return votes


def _winner(correct: Ints, cartel: Ints, singles: Ints) -> Ints:
    total = correct + cartel + singles
    winner: Ints = np.full(total.shape, _NONE, dtype=np.int64)
    winner[2 * correct > total] = _CORRECT
    winner[2 * cartel > total] = _CARTEL
    winner[(total == 1) & (singles == 1)] = _SINGLE
    return winner


def _batch(rng: np.random.Generator, bad: Bools, config: SimulationConfig, size: int) -> _Counts:
    mode, nodes = config.mode, config.nodes
    if mode.kind == CROSS:
        triggered = rng.integers(0, PPM, size=size) < mode.p_ppm
        voters: Ints = np.where(triggered, 1 + mode.n, 1).astype(np.int64)
    else:
        voters = np.full(size, mode.first_wave, dtype=np.int64)
    width = mode.max_replicas
    drawn: Ints = np.empty((size, width + config.max_referees), dtype=np.int64)
    for column in range(width):
        drawn[:, column] = _distinct(rng, nodes, drawn[:, :column])
    used = np.arange(width)[None, :] < voters[:, None]
    is_bad = bad[drawn[:, :width]]
    votes = np.where(used, _votes(rng, is_bad, config.adversary), _NONE)
    correct, cartel, singles = ((votes == vote).sum(axis=1) for vote in (_CORRECT, _CARTEL, _SINGLE))
    wrong_vote = cartel + singles > 0
    unanimous = (voters == 1) | (correct == voters) | (cartel == voters)
    dispute = ~unanimous
    winner = _winner(correct, cartel, singles)
    # Every dispute asks at least one referee, then more until some output holds a strict majority, one at a time
    # from the machines not drawn yet. Only rows with every replica voting can dispute, so every open row has drawn
    # ``width`` machines before its referees.
    open_rows = np.flatnonzero(dispute)
    for referee in range(config.max_referees):
        if open_rows.size == 0 or width + referee >= nodes:
            break
        taken = drawn[open_rows, : width + referee]
        fresh = _distinct(rng, nodes, taken)
        drawn[open_rows, width + referee] = fresh
        vote = _votes(rng, bad[fresh], config.adversary)
        correct[open_rows] += vote == _CORRECT
        cartel[open_rows] += vote == _CARTEL
        singles[open_rows] += vote == _SINGLE
        voters[open_rows] += 1
        winner[open_rows] = _winner(correct[open_rows], cartel[open_rows], singles[open_rows])
        open_rows = open_rows[winner[open_rows] == _NONE]
    first_bad, first_vote = is_bad[:, 0], votes[:, 0]
    caught = first_bad & (first_vote != _CORRECT) & (winner != _NONE) & (winner != first_vote)
    return _Counts(
        requests=size,
        wrong_vote=int(wrong_vote.sum()),
        dispute=int(dispute.sum()),
        undetected_wrong=int((unanimous & wrong_vote).sum()),
        wrong_final=int(((winner == _CARTEL) | (winner == _SINGLE)).sum()),
        unresolved=int((dispute & (winner == _NONE)).sum()),
        honest_slashed=int(((winner == _CARTEL) & (correct > 0)).sum()),
        first_bad=int(first_bad.sum()),
        caught=int(caught.sum()),
        executions=int(voters.sum()),
        executions_squared=int((voters * voters).sum()),
    )

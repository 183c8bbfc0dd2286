"""Closed-form security of the consensus modes, in exact fractions (derivations in ``docs/consensus.md``).

For a mode and an adversary controlling a fraction r of the machines, this computes the probability that a wrong
answer is finalized, that a wrong commitment is detected (a dispute), the expected executions per request and the
chance a cheating replica is convicted, which gives the replication rate above which honesty pays. Replicas are
drawn without replacement from M machines (hypergeometric), or from an unbounded network (binomial limit).
Disputes are settled the way the gateway and :func:`cloister.consensus.verdict.decide` settle them: at least one
referee from the unused machines, then more until some output holds a strict majority of all votes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from math import comb
from typing import Any, Final, Literal

from cloister.consensus.modes import CROSS, PPM, SINGLE, ConsensusMode
from cloister.errors import InvalidAnalysis

Strategy = Literal["honest", "lazy", "colluding"]
STRATEGIES: Final[tuple[Strategy, ...]] = ("honest", "lazy", "colluding")
DEFAULT_MAX_REFEREES: Final = 16
"""Dispute referees asked before a dispute is left undecided. The gateway's only limit is the deployment's unused
replicas (at most ``max_replicas`` - 1 = 15 on the devnet), so this cap binds only in large networks."""
MAX_REFEREES: Final = 64
MIN_N_SEARCH: Final = 32
"""The largest N that :func:`incentive_bound` tries when it looks for the smallest N that makes honesty pay."""

# A vote: the correct output, the cartel's shared wrong output, or a wrong output nobody else gave.
Vote = Literal["correct", "cartel", "single"]


def parse_fraction(text: str, name: str, *, high: Fraction | None = None) -> Fraction:
    """A non-negative decimal (``0.1``) or ratio (``1/3``) from the command line, exactly; at most ``high``."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise InvalidAnalysis(f"{name} must be a decimal like 0.1 or a ratio like 1/3, got {text!r:.40}") from None
    if value < 0 or (high is not None and value > high):
        bound = f"from 0 to {high}" if high is not None else "at least 0"
        raise InvalidAnalysis(f"{name} must be {bound}, got {text!r:.40}")
    return value


@dataclass(frozen=True)
class Adversary:
    """A fraction of the machines that cheat: ``lazy`` ones skip the work and guess (wrong with probability
    ``wrong``, each wrong guess unlike any other), ``colluding`` ones all commit the same wrong output, and
    ``honest`` is the baseline where they do the work after all."""

    fraction: Fraction
    strategy: Strategy = "colluding"
    wrong: Fraction = Fraction(1)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidAnalysis(f"unknown strategy {self.strategy!r:.40}; use one of {', '.join(STRATEGIES)}")
        for name in ("fraction", "wrong"):
            value = getattr(self, name)
            if not isinstance(value, Fraction) or not 0 <= value <= 1:
                raise InvalidAnalysis(f"the adversary's {name} must be an exact fraction from 0 to 1")

    def to_json(self) -> dict[str, Any]:
        return {"fraction": _number(self.fraction), "strategy": self.strategy, "wrong": _number(self.wrong)}


@dataclass(frozen=True)
class Network:
    """``nodes`` machines to draw replicas from (None: the unbounded-network limit) and the dispute-referee cap."""

    nodes: int | None = None
    max_referees: int = DEFAULT_MAX_REFEREES

    def __post_init__(self) -> None:
        if self.nodes is not None and (isinstance(self.nodes, bool) or not 1 <= self.nodes <= 10**9):
            raise InvalidAnalysis(f"the network needs from 1 to 10^9 nodes, got {self.nodes!r:.40}")
        if isinstance(self.max_referees, bool) or not 0 <= self.max_referees <= MAX_REFEREES:
            raise InvalidAnalysis(f"max referees must be from 0 to {MAX_REFEREES}, got {self.max_referees!r:.40}")

    def dishonest_nodes(self, adversary: Adversary) -> int | None:
        """r·M rounded half up: the number of machines the adversary holds in a finite network."""
        return None if self.nodes is None else int(adversary.fraction * self.nodes + Fraction(1, 2))

    def check(self, mode: ConsensusMode) -> None:
        if self.nodes is not None and mode.max_replicas > self.nodes:
            raise InvalidAnalysis(
                f"consensus mode {mode} involves up to {mode.max_replicas} replicas but the network has "
                f"{self.nodes} nodes; use more nodes or a smaller N"
            )

    def to_json(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "max_referees": self.max_referees}


@dataclass(frozen=True)
class SecurityReport:
    """Per-request probabilities (exact) for one mode, adversary and network.

    ``wrong_final``: the answer the verdict finalizes is wrong. ``undetected_wrong``: every replica agreed on a
    wrong answer, so no dispute. ``dispute``: the replicas disagreed. ``detection``: a dispute, given some replica
    committed a wrong output (None when none ever does). ``honest_slashed``: a wrong majority convicted a correct
    replica. ``unresolved``: a dispute that no output won. ``caught``: a cheating first replica is convicted.
    ``cost_factor``: expected executions per request, dispute referees included; ``base_cost`` without disputes.
    """

    mode: ConsensusMode
    adversary: Adversary
    network: Network
    dishonest_nodes: int | None
    involved: Fraction
    wrong_vote: Fraction
    dispute: Fraction
    undetected_wrong: Fraction
    wrong_final: Fraction
    unresolved: Fraction
    honest_slashed: Fraction
    caught: Fraction
    cost_factor: Fraction
    base_cost: Fraction

    @property
    def detection(self) -> Fraction | None:
        return self.dispute / self.wrong_vote if self.wrong_vote else None

    def metrics(self) -> dict[str, Fraction | None]:
        """The named quantities, in the order reports print them (the simulator estimates the same names)."""
        return {
            "wrong_final": self.wrong_final,
            "undetected_wrong": self.undetected_wrong,
            "detection": self.detection,
            "dispute": self.dispute,
            "honest_slashed": self.honest_slashed,
            "unresolved": self.unresolved,
            "caught": self.caught,
            "cost_factor": self.cost_factor,
        }

    def to_json(self) -> dict[str, Any]:
        values = {name: None if value is None else _number(value) for name, value in self.metrics().items()}
        return {
            "mode": str(self.mode),
            "adversary": self.adversary.to_json(),
            "network": self.network.to_json(),
            "dishonest_nodes": self.dishonest_nodes,
            "involved": _number(self.involved),
            "base_cost": _number(self.base_cost),
            **values,
        }


@dataclass(frozen=True)
class Incentives:
    """What one request is worth to a replica: ``reward`` paid, ``cost`` of doing the work, ``slash`` lost if
    convicted (its provider's stake times the dispute slash share). Any one unit: only ratios matter."""

    reward: Fraction
    cost: Fraction
    slash: Fraction

    def __post_init__(self) -> None:
        for name in ("reward", "cost", "slash"):
            value = getattr(self, name)
            if not isinstance(value, Fraction) or value < 0:
                raise InvalidAnalysis(f"{name} must be an exact, non-negative amount")
        if self.reward + self.slash == 0:
            raise InvalidAnalysis("reward and slash are both zero: a cheater then risks nothing; give one of them")

    @property
    def threshold(self) -> Fraction:
        """The conviction probability above which cheating loses: cost / (reward + slash)."""
        return self.cost / (self.reward + self.slash)

    def to_json(self) -> dict[str, Any]:
        return {"reward": _number(self.reward), "cost": _number(self.cost), "slash": _number(self.slash)}


@dataclass(frozen=True)
class IncentiveReport:
    """Cheating saves ``gain`` (the cost) and risks ``expected_loss`` (caught * (reward + slash)); honesty is the
    rational strategy when the loss is larger. ``min_rate`` is the cross replication rate above which it is (None
    when not cross, or when even p = 1 is not enough); ``min_n`` the smallest N of this mode's kind that makes
    honesty pay at this p (None when no N up to :data:`MIN_N_SEARCH` does)."""

    mode: ConsensusMode
    incentives: Incentives
    caught: Fraction
    gain: Fraction
    expected_loss: Fraction
    honest_rational: bool
    min_rate: Fraction | None
    min_n: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": str(self.mode),
            "incentives": self.incentives.to_json(),
            "threshold": _number(self.incentives.threshold),
            "caught": _number(self.caught),
            "gain": _number(self.gain),
            "expected_loss": _number(self.expected_loss),
            "honest_rational": self.honest_rational,
            "min_rate": None if self.min_rate is None else _number(self.min_rate),
            "min_n": self.min_n,
        }


def analyse(mode: ConsensusMode, adversary: Adversary, network: Network = Network()) -> SecurityReport:
    """The closed forms for ``mode`` against ``adversary`` on ``network``."""
    network.check(mode)
    pool = _Pool.of(network, adversary)
    p = Fraction(mode.p_ppm, PPM)
    if mode.kind == CROSS:
        outcome = _first_wave(pool, adversary, 1, network).mix(_first_wave(pool, adversary, 1 + mode.n, network), p)
        base = 1 + p * mode.n
    else:
        outcome = _first_wave(pool, adversary, mode.first_wave, network)
        base = Fraction(mode.first_wave)
    return SecurityReport(
        mode=mode,
        adversary=adversary,
        network=network,
        dishonest_nodes=network.dishonest_nodes(adversary),
        involved=outcome.involved,
        wrong_vote=outcome.wrong_vote,
        dispute=outcome.dispute,
        undetected_wrong=outcome.undetected_wrong,
        wrong_final=outcome.wrong_final,
        unresolved=outcome.unresolved,
        honest_slashed=outcome.honest_slashed,
        caught=_mode_caught(mode, pool, adversary, network),
        cost_factor=outcome.executions,
        base_cost=base,
    )


def incentive_bound(
    mode: ConsensusMode, adversary: Adversary, incentives: Incentives, network: Network = Network()
) -> IncentiveReport:
    """Whether a replica selected first does better by doing the work, and how much checking makes it so."""
    if adversary.strategy == "honest":
        raise InvalidAnalysis("the incentive bound weighs what a cheater risks: use the lazy or colluding strategy")
    network.check(mode)
    pool = _Pool.of(network, adversary)
    caught = _mode_caught(mode, pool, adversary, network)
    loss = caught * (incentives.reward + incentives.slash)
    min_rate: Fraction | None = None
    if mode.kind == CROSS:
        checked = _caught(pool, adversary, 1 + mode.n, network)
        if checked and incentives.threshold < checked:
            min_rate = incentives.threshold / checked
    return IncentiveReport(
        mode=mode,
        incentives=incentives,
        caught=caught,
        gain=incentives.cost,
        expected_loss=loss,
        honest_rational=incentives.cost < loss,
        min_rate=min_rate,
        min_n=_min_n(mode, adversary, incentives, network),
    )


def _min_n(mode: ConsensusMode, adversary: Adversary, incentives: Incentives, network: Network) -> int | None:
    if mode.kind == SINGLE:
        return None
    for n in range(1, MIN_N_SEARCH + 1):
        candidate = replace(mode, n=n)
        if network.nodes is not None and candidate.max_replicas > network.nodes:
            return None
        caught = _mode_caught(candidate, _Pool.of(network, adversary), adversary, network)
        if incentives.cost < caught * (incentives.reward + incentives.slash):
            return n
    return None


def _mode_caught(mode: ConsensusMode, pool: _Pool, adversary: Adversary, network: Network) -> Fraction:
    """P(a cheating first replica is convicted): cross convicts only when its coin calls the referees."""
    if mode.kind == CROSS:
        return Fraction(mode.p_ppm, PPM) * _caught(pool, adversary, 1 + mode.n, network)
    return _caught(pool, adversary, mode.first_wave, network)


# --- the exact engine --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pool:
    """The machines replicas are drawn from: ``nodes`` of which ``bad`` are the adversary's, or (``nodes`` None)
    an unbounded network where each is the adversary's with probability ``fraction``."""

    nodes: int | None
    bad: int
    fraction: Fraction

    @classmethod
    def of(cls, network: Network, adversary: Adversary) -> _Pool:
        bad = network.dishonest_nodes(adversary)
        if network.nodes is None or bad is None:
            return cls(None, 0, adversary.fraction)
        return cls(network.nodes, bad, Fraction(0))

    def without_deviator(self) -> _Pool:
        """The others, seen by a cheating replica: one adversary machine fewer (itself, if the adversary has any)."""
        if self.nodes is None:
            return self
        return _Pool(self.nodes - 1, max(self.bad - 1, 0), Fraction(0))

    def composition(self, count: int) -> list[tuple[int, Fraction]]:
        """P(x adversary machines among ``count`` drawn): hypergeometric, or binomial when unbounded."""
        if self.nodes is None:
            r = self.fraction
            return [(x, comb(count, x) * r**x * (1 - r) ** (count - x)) for x in range(count + 1)]
        good, total = self.nodes - self.bad, comb(self.nodes, count)
        return [
            (x, Fraction(comb(self.bad, x) * comb(good, count - x), total))
            for x in range(count + 1)
            if x <= self.bad and count - x <= good
        ]

    def next_bad(self, drawn: int, drawn_bad: int) -> Fraction:
        """P(the next machine drawn is the adversary's), ``drawn`` of which ``drawn_bad`` bad already taken."""
        if self.nodes is None:
            return self.fraction
        return Fraction(self.bad - drawn_bad, self.nodes - drawn)

    def exhausted(self, drawn: int) -> bool:
        return self.nodes is not None and drawn >= self.nodes


@dataclass(frozen=True)
class _Tally:
    correct: int
    cartel: int
    singles: int

    @property
    def total(self) -> int:
        return self.correct + self.cartel + self.singles

    @property
    def unanimous(self) -> bool:
        return self.total == 1 or self.total in (self.correct, self.cartel)

    def winner(self) -> Vote | None:
        """The output held by a strict majority (a lone wrong guess only wins alone)."""
        if 2 * self.correct > self.total:
            return "correct"
        if 2 * self.cartel > self.total:
            return "cartel"
        return "single" if self.total == 1 and self.singles == 1 else None

    def add(self, vote: Vote) -> _Tally:
        return _Tally(
            self.correct + (vote == "correct"), self.cartel + (vote == "cartel"), self.singles + (vote == "single")
        )


@dataclass(frozen=True)
class _Outcome:
    """Joint per-request probabilities; linear, so a cross mode is a mix of its two cases."""

    involved: Fraction = Fraction(0)
    wrong_vote: Fraction = Fraction(0)
    dispute: Fraction = Fraction(0)
    undetected_wrong: Fraction = Fraction(0)
    wrong_final: Fraction = Fraction(0)
    unresolved: Fraction = Fraction(0)
    honest_slashed: Fraction = Fraction(0)
    executions: Fraction = Fraction(0)

    def mix(self, other: _Outcome, weight: Fraction) -> _Outcome:
        """``(1 - weight)`` of this one and ``weight`` of ``other``."""
        return _Outcome(
            **{f.name: (1 - weight) * getattr(self, f.name) + weight * getattr(other, f.name) for f in fields(self)}
        )


def _bad_votes(adversary: Adversary) -> list[tuple[Vote, Fraction]]:
    """How one adversary machine votes."""
    if adversary.strategy == "honest":
        return [("correct", Fraction(1))]
    if adversary.strategy == "colluding":
        return [("cartel", Fraction(1))]
    choices: tuple[tuple[Vote, Fraction], ...] = (("single", adversary.wrong), ("correct", 1 - adversary.wrong))
    return [(vote, weight) for vote, weight in choices if weight]


def _tallies(adversary: Adversary, good: int, bad: int) -> list[tuple[_Tally, Fraction]]:
    """Vote counts of ``good`` honest and ``bad`` adversary replicas (lazy ones wrong independently)."""
    if adversary.strategy == "honest":
        return [(_Tally(good + bad, 0, 0), Fraction(1))]
    if adversary.strategy == "colluding":
        return [(_Tally(good, bad, 0), Fraction(1))]
    q = adversary.wrong
    return [
        (_Tally(good + bad - y, 0, y), comb(bad, y) * q**y * (1 - q) ** (bad - y))
        for y in range(bad + 1)
        if q**y * (1 - q) ** (bad - y)
    ]


# A dispute in progress: the tally, machines drawn from the pool so far and how many of them were bad.
_State = tuple[_Tally, int, int]


def _resolve(
    pool: _Pool, adversary: Adversary, disputes: Mapping[_State, Fraction], max_referees: int
) -> dict[tuple[_Tally, int], Fraction]:
    """Final tallies (and referees used) of weighted disputes, settled as the gateway settles them: at least one
    referee, then more until some output holds a strict majority of all votes, ``max_referees`` have joined, or no
    machine is left. (The gateway asks them in batches of the fewest that could decide: the same draws, grouped.)
    All disputes walk together, so states they share are expanded once."""
    final: dict[tuple[_Tally, int], Fraction] = defaultdict(Fraction)
    frontier = dict(disputes)
    for referees in range(max_referees + 1):
        following: dict[_State, Fraction] = defaultdict(Fraction)
        for (current, taken, taken_bad), weight in frontier.items():
            decided = referees > 0 and current.winner() is not None
            if decided or referees == max_referees or pool.exhausted(taken):
                final[current, referees] += weight
                continue
            bad = pool.next_bad(taken, taken_bad)
            if bad < 1:
                following[current.add("correct"), taken + 1, taken_bad] += weight * (1 - bad)
            for vote, chance in _bad_votes(adversary) if bad else []:
                following[current.add(vote), taken + 1, taken_bad + 1] += weight * bad * chance
        frontier = following
    return final


def _first_wave(pool: _Pool, adversary: Adversary, k: int, network: Network) -> _Outcome:
    """Outcome when ``k`` replicas run a request and disputes are settled."""
    totals: dict[str, Fraction] = defaultdict(Fraction)
    disputes: dict[_State, Fraction] = defaultdict(Fraction)
    for bad, p_bad in pool.composition(k):
        for tally, p_tally in _tallies(adversary, k - bad, bad):
            weight = p_bad * p_tally
            wrong = tally.cartel + tally.singles > 0
            totals["involved"] += weight if bad else 0
            totals["wrong_vote"] += weight if wrong else 0
            if tally.unanimous:
                totals["undetected_wrong"] += weight if wrong else 0
                totals["wrong_final"] += weight if wrong else 0
                totals["executions"] += weight * k
            else:
                totals["dispute"] += weight
                disputes[tally, k, bad] += weight
    for (final, referees), share in _resolve(pool, adversary, disputes, network.max_referees).items():
        winner = final.winner()
        totals["executions"] += share * (k + referees)
        totals["unresolved"] += share if winner is None else 0
        totals["wrong_final"] += share if winner == "cartel" else 0
        totals["honest_slashed"] += share if winner == "cartel" and final.correct else 0
    return _Outcome(**totals)


def _caught(pool: _Pool, adversary: Adversary, k: int, network: Network) -> Fraction:
    """P(a cheating replica that is first of ``k`` is convicted): its output wrong and some other output wins."""
    others = pool.without_deviator()
    caught = Fraction(0)
    for own, p_own in _bad_votes(adversary):
        if own == "correct":
            continue
        disputes: dict[_State, Fraction] = defaultdict(Fraction)
        for bad, p_bad in others.composition(k - 1):
            for tally, p_tally in _tallies(adversary, k - 1 - bad, bad):
                start = tally.add(own)
                if not start.unanimous:
                    disputes[start, k - 1, bad] += p_own * p_bad * p_tally
        resolved = _resolve(others, adversary, disputes, network.max_referees)
        caught += sum((p for (final, _), p in resolved.items() if final.winner() not in (None, own)), Fraction(0))
    return caught


def _number(value: Fraction) -> dict[str, Any]:
    """Exact (``"1/27"``) and approximate (``0.037…``) spellings of a quantity, for JSON."""
    return {"exact": str(value), "value": float(value)}

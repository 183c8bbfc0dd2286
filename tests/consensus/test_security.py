"""Closed-form security of the consensus modes: hand-computed values, edge cases, incentives and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from math import comb

import pytest
from typer.testing import CliRunner, Result

from cloister.consensus.modes import parse_mode
from cloister.consensus.security import (
    Adversary,
    Incentives,
    Network,
    SecurityReport,
    analyse,
    incentive_bound,
    parse_fraction,
)
from cloister.errors import CloisterError, InvalidAnalysis

F = Fraction

TENTH = Adversary(F(1, 10))


def metrics(report: SecurityReport) -> dict[str, F | None]:
    return report.metrics()


# --- hand-computed values ------------------------------------------------------------------------------------


def test_sampling_three_against_a_cartel_in_an_unbounded_network() -> None:
    # X ~ Bin(3, 1/10) cartel votes: undetected iff X = 3, dispute iff 0 < X < 3.
    report = analyse(parse_mode("sampling:3"), TENTH)
    r = F(1, 10)
    assert report.undetected_wrong == F(1, 1000)
    assert report.dispute == 1 - F(1, 1000) - F(729, 1000)
    assert report.detection == F(270, 271)
    assert report.involved == 1 - F(729, 1000)
    # Every dispute asks a referee. 2 cartel : 1 honest stays wrong if the referee is the cartel's, or if it is
    # honest (a 2:2 tie) and a second one is the cartel's; 1 : 2 turns wrong only with two cartel referees.
    assert report.honest_slashed == F(27, 1000) * (r + (1 - r) * r) + F(243, 1000) * r * r == F(189, 25000)
    assert report.wrong_final == F(1, 1000) + report.honest_slashed
    assert report.cost_factor == 3 + F(270, 1000) + F(243, 1000) * r + F(27, 1000) * (1 - r)
    assert report.base_cost == 3 and report.unresolved == 0
    # A cheater with two honest others loses unless two referees in a row side with it; with one honest other it
    # loses when two referees in a row are honest.
    assert report.caught == F(81, 100) * (1 - r * r) + F(18, 100) * (1 - r) ** 2 == F(9477, 10000)


def test_an_even_quorum_asks_one_referee_to_break_a_tie() -> None:
    report = analyse(parse_mode("sampling:2"), TENTH)
    tie = 2 * F(1, 10) * F(9, 10)
    assert report.wrong_final == F(1, 100) + tie * F(1, 10)
    assert report.cost_factor == 2 + tie
    assert report.caught == F(9, 10) * F(9, 10)
    without = analyse(parse_mode("sampling:2"), TENTH, Network(max_referees=0))
    assert without.unresolved == tie and without.wrong_final == F(1, 100) and without.caught == 0


def test_cross_mixes_an_unchecked_answer_with_a_checked_one() -> None:
    report = analyse(parse_mode("cross:0.5,1"), TENTH)
    assert report.wrong_final == F(1, 2) * F(1, 10) + F(1, 2) * F(28, 1000)
    assert report.undetected_wrong == F(1, 2) * F(1, 10) + F(1, 2) * F(1, 100)
    assert report.cost_factor == 1 + F(1, 2) * (1 + F(18, 100))
    assert report.base_cost == F(3, 2)
    assert report.caught == F(1, 2) * F(81, 100)


def test_a_finite_network_draws_without_replacement() -> None:
    # 10 machines, 3 of them the cartel's: hypergeometric, not binomial, and so are the referees.
    report = analyse(parse_mode("sampling:3"), Adversary(F(3, 10)), Network(10))
    assert report.dishonest_nodes == 3
    assert report.undetected_wrong == F(comb(3, 3), comb(10, 3))
    assert report.dispute == 1 - F(1, 120) - F(comb(7, 3), 120)
    two, one = F(comb(3, 2) * 7, 120), F(3 * comb(7, 2), 120)
    # 2:1 for the cartel, 7 machines left (1 cartel): it wins via the 1st referee, or the 2nd after a tie.
    # 1:2, 7 machines left (2 cartel): it wins only if both referees are its own.
    assert report.wrong_final == F(1, 120) + two * (F(1, 7) + F(6, 7) * F(1, 6)) + one * F(2, 7) * F(1, 6)
    assert report.wrong_final == F(1, 12)
    # The one dishonest machine of four: once drawn (half the time), the referee comes from two honest ones.
    small = analyse(parse_mode("sampling:2"), Adversary(F(1, 4)), Network(4))
    assert (small.dispute, small.wrong_final, small.cost_factor, small.caught) == (F(1, 2), 0, F(5, 2), 1)


@pytest.mark.parametrize("nodes", [20, 50, 1000])
def test_hypergeometric_undetected_matches_the_counting_formula(nodes: int) -> None:
    bad = nodes // 5
    report = analyse(parse_mode("obfuscated:3"), Adversary(F(1, 5)), Network(nodes))
    assert report.undetected_wrong == F(comb(bad, 4), comb(nodes, 4))


def test_a_large_network_tends_to_the_unbounded_limit() -> None:
    mode, adversary = parse_mode("cross:0.2,2"), Adversary(F(1, 4))
    limit, large = analyse(mode, adversary), analyse(mode, adversary, Network(1_000_000))
    for name, value in metrics(limit).items():
        other = metrics(large)[name]
        assert value is not None and other is not None
        assert abs(float(value) - float(other)) < 1e-5, name


def test_lazy_guessers_are_detected_whenever_two_replicas_run() -> None:
    lazy = Adversary(F(1, 5), "lazy", F(1, 2))
    report = analyse(parse_mode("sampling:3"), lazy, Network(max_referees=0))
    wrong = F(1, 10)  # r·q: a replica commits a wrong guess
    assert report.dispute == 1 - (1 - wrong) ** 3
    assert report.detection == 1
    assert report.wrong_final == report.undetected_wrong == report.honest_slashed == 0
    # No referees: with two or three distinct wrong guesses nobody holds a majority.
    assert report.unresolved == 3 * wrong**2 * (1 - wrong) + wrong**3
    assert report.caught == F(1, 2) * (1 - wrong) ** 2
    single = analyse(parse_mode("single"), lazy)
    assert single.wrong_final == single.undetected_wrong == wrong
    assert single.detection == 0 and single.caught == 0


def test_referees_settle_lazy_disputes_and_cost_executions() -> None:
    lazy = Adversary(F(1, 5), "lazy", F(1, 2))
    capped = analyse(parse_mode("sampling:3"), lazy, Network(max_referees=0))
    report = analyse(parse_mode("sampling:3"), lazy)
    assert report.unresolved < capped.unresolved
    assert report.caught > capped.caught
    assert report.cost_factor > 3


# --- edge cases ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["single", "sampling:3", "cross:0.3,2", "obfuscated:2"])
@pytest.mark.parametrize("strategy", ["lazy", "colluding"])
def test_no_adversary_means_no_wrong_answer(mode: str, strategy: str) -> None:
    report = analyse(parse_mode(mode), Adversary(F(0), strategy))  # type: ignore[arg-type]
    assert report.wrong_final == report.dispute == report.unresolved == report.involved == 0
    assert report.detection is None
    assert report.cost_factor == report.base_cost


def test_a_lone_cheater_among_honest_replicas_is_caught_unless_alone() -> None:
    nobody = Adversary(F(0))
    assert analyse(parse_mode("sampling:3"), nobody).caught == 1
    assert analyse(parse_mode("sampling:3"), nobody, Network(3)).caught == 1
    assert analyse(parse_mode("single"), nobody).caught == 0
    # Two replicas, no machine left for a referee: the tie stays undecided.
    assert analyse(parse_mode("sampling:2"), nobody, Network(2)).caught == 0
    assert analyse(parse_mode("sampling:2"), nobody, Network(3)).caught == 1


@pytest.mark.parametrize("mode", ["single", "sampling:3", "cross:0.3,2", "obfuscated:2"])
def test_a_cartel_holding_every_machine_wins_silently(mode: str) -> None:
    for network in (Network(), Network(10)):
        report = analyse(parse_mode(mode), Adversary(F(1)), network)
        assert report.wrong_final == report.undetected_wrong == report.involved == 1
        assert report.detection == 0 and report.caught == 0


def test_all_lazy_wrong_guesses_leave_every_dispute_undecided() -> None:
    report = analyse(parse_mode("sampling:3"), Adversary(F(1), "lazy"), Network(10))
    assert report.dispute == report.unresolved == 1
    assert report.wrong_final == 0
    assert report.cost_factor == 3 + 7  # every remaining machine is asked, all guess differently


@pytest.mark.parametrize("strategy", ["lazy", "colluding"])
def test_degenerate_modes_coincide(strategy: str) -> None:
    adversary = Adversary(F(1, 3), strategy, F(2, 3))  # type: ignore[arg-type]
    for network in (Network(), Network(12)):
        single = metrics(analyse(parse_mode("single"), adversary, network))
        assert metrics(analyse(parse_mode("sampling:1"), adversary, network)) == single
        assert metrics(analyse(parse_mode("cross:0,3"), adversary, network)) == single
        full = metrics(analyse(parse_mode("cross:1,2"), adversary, network))
        assert full == metrics(analyse(parse_mode("obfuscated:2"), adversary, network))
        assert full == metrics(analyse(parse_mode("sampling:3"), adversary, network))


def test_honest_strategy_is_the_baseline() -> None:
    report = analyse(parse_mode("sampling:3"), Adversary(F(1, 2), "honest"), Network(10))
    assert report.involved > 0
    assert report.wrong_vote == report.wrong_final == report.dispute == report.caught == 0


# --- incentives ----------------------------------------------------------------------------------------------

ATOMA_EXAMPLE = Incentives(reward=F(1, 5), cost=F(1), slash=F(250))


def test_cross_replication_rate_above_which_honesty_pays() -> None:
    # Checked with N = 1: the other replica is honest (9/10) and the tie-break referee too (9/10).
    bound = incentive_bound(parse_mode("cross:0.01,1"), TENTH, ATOMA_EXAMPLE)
    assert bound.min_rate == ATOMA_EXAMPLE.threshold / F(81, 100) == F(500, 101331)
    assert bound.caught == F(1, 100) * F(81, 100)
    assert bound.gain == 1 and bound.expected_loss == bound.caught * F(1251, 5)
    assert bound.honest_rational
    assert not incentive_bound(parse_mode("cross:0.004,1"), TENTH, ATOMA_EXAMPLE).honest_rational


def test_smallest_n_that_makes_honesty_pay() -> None:
    money = Incentives(reward=F(1, 5), cost=F(1), slash=F(1))  # needs conviction above 5/6
    bound = incentive_bound(parse_mode("sampling:2"), TENTH, money)
    assert not bound.honest_rational and bound.min_rate is None
    # sampling:2 convicts with 0.81 (the other and the tie-break referee honest); sampling:3 with 0.9477.
    assert bound.caught == F(81, 100)
    assert bound.min_n == 3


def test_no_checking_no_deterrence() -> None:
    single = incentive_bound(parse_mode("single"), TENTH, ATOMA_EXAMPLE)
    assert single.caught == 0 and not single.honest_rational and single.min_n is None
    owned = incentive_bound(parse_mode("cross:0.5,3"), Adversary(F(1)), ATOMA_EXAMPLE)
    assert owned.min_rate is None and owned.min_n is None and not owned.honest_rational
    capped = incentive_bound(parse_mode("sampling:2"), Adversary(F(1, 2)), ATOMA_EXAMPLE, Network(3))
    assert capped.min_n is None  # sampling:4 would not fit in three machines


def test_incentive_inputs_are_checked() -> None:
    with pytest.raises(InvalidAnalysis, match="lazy or colluding"):
        incentive_bound(parse_mode("sampling:2"), Adversary(F(1, 10), "honest"), ATOMA_EXAMPLE)
    with pytest.raises(InvalidAnalysis, match="risks nothing"):
        Incentives(F(0), F(1), F(0))
    with pytest.raises(InvalidAnalysis, match="non-negative"):
        Incentives(F(-1), F(1), F(1))


# --- validation and JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["abc", "1/0", "-0.1", "nan", "inf", "", "1.5"])
def test_bad_fractions_are_refused(text: str) -> None:
    with pytest.raises(InvalidAnalysis, match="--dishonest-fraction"):
        parse_fraction(text, "--dishonest-fraction", high=F(1))


def test_fractions_parse_exactly() -> None:
    assert parse_fraction(" 0.1 ", "r", high=F(1)) == F(1, 10)
    assert parse_fraction("1/3", "r", high=F(1)) == F(1, 3)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Adversary(F(11, 10)), "fraction"),
        (lambda: Adversary(F(1, 2), "greedy"), "unknown strategy"),  # type: ignore[arg-type]
        (lambda: Adversary(0.5), "fraction"),  # type: ignore[arg-type]
        (lambda: Network(0), "nodes"),
        (lambda: Network(10, max_referees=65), "max referees"),
        (lambda: analyse(parse_mode("sampling:5"), TENTH, Network(4)), "4 nodes"),
        (lambda: analyse(parse_mode("cross:0.1,4"), TENTH, Network(4)), "up to 5 replicas"),
    ],
)
def test_bad_parameters_are_refused(build: object, message: str) -> None:
    with pytest.raises(InvalidAnalysis, match=message):
        build()  # type: ignore[operator]


def test_reports_serialise_exactly() -> None:
    report = analyse(parse_mode("cross:0.25,2"), Adversary(F(1, 3), "lazy", F(1, 2)), Network(30))
    data = json.loads(json.dumps(report.to_json()))
    assert data["mode"] == "cross:0.25,2" and data["dishonest_nodes"] == 10
    for name, value in report.metrics().items():
        assert value is not None
        assert F(data[name]["exact"]) == value
    bound = incentive_bound(parse_mode("cross:0.25,2"), TENTH, ATOMA_EXAMPLE)
    encoded = json.loads(json.dumps(bound.to_json()))
    assert F(encoded["min_rate"]["exact"]) == bound.min_rate and encoded["honest_rational"] is True


# --- the command line ----------------------------------------------------------------------------------------


def security_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """``cloister security …`` in process; the CLI is imported here so the pure tests do not depend on it."""
    from cloister.cli.main import app

    return CliRunner().invoke(app, ["security", *args], env=env)


def cloister(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cloister", "security", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_calc_prints_json_with_both_networks_and_the_bound() -> None:
    args = ["--mode", "cross", "--p", "0.01", "--n", "1", "-r", "0.1", "--nodes", "1000", "--reward", "0.2"]
    result = security_cli("calc", *args, "--cost", "1", "--stake", "500", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["finite"]["dishonest_nodes"] == 100 and data["unbounded"]["network"]["nodes"] is None
    assert F(data["unbounded"]["wrong_final"]["exact"]) == F(99, 100) * F(1, 10) + F(1, 100) * F(28, 1000)
    assert data["incentives"]["incentives"]["slash"]["exact"] == "250"  # half the stake: the devnet's 5000 bps


def test_calc_prints_tables() -> None:
    args = ["--mode", "sampling:3", "-r", "1/3", "--nodes", "30", "--reward", "1", "--cost", "1", "--stake", "10"]
    result = security_cli("calc", *args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("P(wrong answer finalized)", "M = 30 (10 dishonest)", "unbounded network", "honesty is rational"):
        assert text in result.output


MONEY = ["--reward", "1", "--cost", "1", "--stake", "1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "cross", "--n", "2", "-r", "0.1"], "needs --p"),
        (["--mode", "sampling", "-r", "0.1"], "needs --n"),
        (["--mode", "sampling:3", "--n", "3", "-r", "0.1"], "drop --n and --p"),
        (["--mode", "single", "--p", "0.5", "-r", "0.1"], "only for --mode cross"),
        (["--mode", "sampling:3", "-r", "2"], "from 0 to 1"),
        (["--mode", "sampling:3", "-r", "a lot"], "decimal like 0.1"),
        (["--mode", "quorum", "--n", "3", "-r", "0.1"], "is not a consensus mode"),
        (["--mode", "cross", "--p", "1.5", "--n", "1", "-r", "0.1"], "p must be a decimal from 0 to 1"),
        (["--mode", "sampling:3", "-r", "0.1", "--nodes", "2"], "has 2 nodes"),
        (["--mode", "sampling:3", "-r", "0.1", "--reward", "1"], "needs all of --reward, --cost and --stake"),
        (["--mode", "sampling:3", "-r", "0.1", *MONEY, "--slash-bps", "20000"], "--slash-bps"),
        (["--mode", "sampling:3", "-r", "0.1", "-q", "2"], "--wrong-probability"),
    ],
)
def test_calc_explains_bad_input(args: list[str], message: str) -> None:
    result = security_cli("calc", *args)
    assert isinstance(result.exception, CloisterError)
    assert message in result.exception.message


def test_bad_input_is_one_red_line_not_a_traceback() -> None:
    result = cloister("calc", "--mode", "cross", "--n", "2", "-r", "0.1")
    assert result.returncode == 1
    assert "error (invalid_analysis): --mode cross needs --p" in result.stderr and "Traceback" not in result.stderr


def test_unknown_strategy_is_a_usage_error() -> None:
    result = security_cli("calc", "--mode", "sampling:3", "-r", "0.1", "--strategy", "greedy")
    assert result.exit_code == 2 and "greedy" in result.output

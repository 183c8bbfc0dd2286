"""The Monte-Carlo simulator against the closed forms: same protocol, independent arithmetic."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from tests.consensus.test_security import security_cli

from cloister.consensus.modes import parse_mode
from cloister.consensus.security import Adversary
from cloister.consensus.simulate import SimulationConfig, simulate, wilson
from cloister.errors import InvalidAnalysis

F = Fraction

CASES = [
    # mode, adversary, nodes, requests, seed
    ("sampling:3", Adversary(F(1, 10)), 10_000, 1_000_000, 1),
    ("sampling:2", Adversary(F(2, 5)), 10_000, 200_000, 2),
    ("cross:0.1,2", Adversary(F(1, 5), "lazy", F(1, 2)), 10_000, 200_000, 3),
    ("cross:0.3,1", Adversary(F(1, 4)), 10_000, 200_000, 4),
    ("obfuscated:2", Adversary(F(1, 3), "lazy", F(3, 4)), 10_000, 200_000, 5),
    ("single", Adversary(F(1, 10), "lazy", F(1, 2)), 10_000, 200_000, 6),
    ("sampling:4", Adversary(F(1, 2), "lazy", F(1)), 10_000, 200_000, 7),
    # Small deployments, where drawing without replacement matters and referees run out.
    ("sampling:3", Adversary(F(2, 7)), 7, 200_000, 8),
    ("sampling:2", Adversary(F(1, 3), "lazy", F(1, 2)), 6, 200_000, 9),
    ("obfuscated:1", Adversary(F(1, 3), "honest"), 6, 100_000, 10),
]


@pytest.mark.parametrize(("mode", "adversary", "nodes", "requests", "seed"), CASES)
def test_estimates_bracket_the_closed_forms(
    mode: str, adversary: Adversary, nodes: int, requests: int, seed: int
) -> None:
    config = SimulationConfig(parse_mode(mode), adversary, nodes=nodes, requests=requests, seed=seed, confidence=0.999)
    report = simulate(config)
    assert report.dishonest_nodes == report.closed_form.dishonest_nodes
    checked = 0
    for item in report.estimates:
        if item.closed_form is None or item.value is None:
            continue  # e.g. no wrong commitment at all, so no detection rate to estimate
        assert item.inside, (item.name, item.value, item.low, item.high, float(item.closed_form))
        checked += 1
    assert checked >= 6


def test_ninety_five_percent_intervals_on_the_default_network() -> None:
    config = SimulationConfig(parse_mode("cross:0.01,1"), Adversary(F(1, 10)), seed=11)
    report = simulate(config)
    assert config.nodes == 10_000 and config.requests == 1_000_000
    assert all(item.inside for item in report.estimates)
    assert report.estimate("unresolved").hits == 0 and report.closed_form.unresolved == 0


def test_the_simulator_tells_our_majority_rule_from_the_unanimity_formula() -> None:
    """Atoma's r^N counts only unanimous wrong answers; a cartel with a majority of the sample wins more often."""
    config = SimulationConfig(parse_mode("sampling:3"), Adversary(F(1, 5)), requests=200_000, seed=12, confidence=0.999)
    report = simulate(config)
    wrong = report.estimate("wrong_final")
    assert wrong.low is not None and wrong.high is not None
    assert not wrong.low <= (1 / 5) ** 3 <= wrong.high
    assert wrong.low <= float(report.closed_form.wrong_final) <= wrong.high


def test_runs_are_reproducible_by_seed() -> None:
    config = SimulationConfig(parse_mode("sampling:2"), Adversary(F(1, 4), "lazy", F(1, 2)), requests=50_000, seed=3)
    first, again = simulate(config), simulate(config)
    assert first.to_json() == again.to_json()
    other = simulate(SimulationConfig(config.mode, config.adversary, requests=50_000, seed=4))
    assert other.to_json()["estimates"] != first.to_json()["estimates"]


def test_progress_counts_every_request() -> None:
    seen: list[int] = []
    config = SimulationConfig(parse_mode("single"), Adversary(F(1, 2)), nodes=100, requests=150_000)
    simulate(config, seen.append)
    assert sum(seen) == 150_000 and len(seen) == 3


def test_wilson_interval_known_values() -> None:
    low, high = wilson(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert wilson(0, 10)[0] == 0.0 and round(wilson(0, 10)[1], 4) == 0.2775
    assert wilson(10, 10)[1] == 1.0
    wide, narrow = wilson(50, 100, 0.999), wilson(50, 100, 0.9)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]
    with pytest.raises(InvalidAnalysis):
        wilson(3, 2)
    with pytest.raises(InvalidAnalysis):
        wilson(0, 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"requests": 0}, "requests"),
        ({"requests": True}, "requests"),
        ({"seed": -1}, "seed"),
        ({"confidence": 1.0}, "confidence"),
        ({"nodes": 2}, "has 2 nodes"),
        ({"max_referees": -1}, "max referees"),
    ],
)
def test_bad_configurations_are_refused(changes: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"nodes": 100, "requests": 10, "seed": 0, **changes}
    with pytest.raises(InvalidAnalysis, match=message):
        SimulationConfig(parse_mode("sampling:3"), Adversary(F(1, 10)), **settings)  # type: ignore[arg-type]


def test_simulate_command_prints_json_and_tables() -> None:
    args = ["simulate", "--mode", "sampling", "--n", "3", "-r", "0.1", "--requests", "20000"]
    result = security_cli(*args, "--nodes", "500", "--seed", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dishonest_nodes"] == 50 and data["requests"] == 20_000
    names = [item["name"] for item in data["estimates"]]
    assert names[0] == "wrong_final" and "cost_factor" in names
    table = security_cli(*args, "--strategy", "lazy", "-q", "0.5", env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "95% interval" in table.stdout and "20,000 requests over 10,000 nodes (1,000 dishonest)" in table.stdout


def test_simulate_command_explains_bad_input() -> None:
    result = security_cli("simulate", "--mode", "sampling:3", "-r", "0.1", "--requests", "0")
    assert isinstance(result.exception, InvalidAnalysis) and "requests must be" in result.exception.message

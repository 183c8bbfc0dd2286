"""`cloister security …`: how safe each consensus mode is, in closed form and by Monte-Carlo simulation."""

from __future__ import annotations

import time
from enum import StrEnum
from fractions import Fraction
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cloister.cli.common import console, err_console, print_json
from cloister.consensus.modes import ConsensusMode, parse_mode
from cloister.consensus.security import (
    DEFAULT_MAX_REFEREES,
    Adversary,
    IncentiveReport,
    Incentives,
    Network,
    SecurityReport,
    analyse,
    incentive_bound,
    parse_fraction,
)
from cloister.consensus.simulate import SimulationConfig, SimulationReport, simulate
from cloister.errors import InvalidAnalysis

app = typer.Typer(
    help="Security of the consensus modes: closed forms and a Monte-Carlo simulation.", no_args_is_help=True
)
DEVNET_SLASH_BPS = 5000  # the devnet genesis's dispute_slash_bps


class StrategyChoice(StrEnum):
    honest = "honest"
    lazy = "lazy"
    colluding = "colluding"


ModeOption = Annotated[
    str, typer.Option("--mode", help="single, sampling, cross or obfuscated; or a whole mode like cross:0.01,1.")
]
FractionOption = Annotated[
    str, typer.Option("--dishonest-fraction", "-r", help="Share r of the machines that cheat (0.1 or 1/10).")
]
NOption = Annotated[int | None, typer.Option("--n", help="N of sampling:N, cross:p,N or obfuscated:N.")]
POption = Annotated[str | None, typer.Option("--p", help="Re-execution probability p of cross:p,N.")]
StrategyOption = Annotated[
    StrategyChoice,
    typer.Option(help="colluding: all cheaters commit one wrong output; lazy: each guesses; honest: baseline."),
]
WrongOption = Annotated[
    str, typer.Option("--wrong-probability", "-q", help="Chance q that a lazy replica's guess is wrong.")
]
RefereesOption = Annotated[int, typer.Option(help="Most referees a dispute asks before it is left undecided.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

ROWS = {
    "wrong_final": "P(wrong answer finalized)",
    "undetected_wrong": "P(wrong answer, no dispute)",
    "detection": "P(dispute | a wrong commitment)",
    "dispute": "P(dispute)",
    "honest_slashed": "P(honest replica slashed)",
    "unresolved": "P(dispute left undecided)",
    "caught": "P(cheating first replica convicted)",
    "cost_factor": "executions per request",
}


def build_mode(mode: str, n: int | None, p: str | None) -> ConsensusMode:
    """``--mode cross --p 0.01 --n 1`` or ``--mode cross:0.01,1``: one parser decides either way."""
    kind = mode.strip()
    if ":" in kind:
        if n is not None or p is not None:
            raise InvalidAnalysis(f"--mode {kind} already holds its parameters; drop --n and --p")
        return parse_mode(kind)
    if kind == "cross":
        if n is None or p is None:
            raise InvalidAnalysis("--mode cross needs --p (the re-execution probability) and --n (the quorum)")
        return parse_mode(f"cross:{p},{n}")
    if p is not None:
        raise InvalidAnalysis(f"--p is only for --mode cross, not {kind!r:.40}")
    if kind == "single":
        if n not in (None, 1):
            raise InvalidAnalysis("--mode single runs one replica; drop --n")
        return parse_mode("single")
    if kind in ("sampling", "obfuscated") and n is None:
        raise InvalidAnalysis(f"--mode {kind} needs --n")
    return parse_mode(f"{kind}:{n}")


def _adversary(fraction: str, strategy: StrategyChoice, wrong: str) -> Adversary:
    return Adversary(
        parse_fraction(fraction, "--dishonest-fraction", high=Fraction(1)),
        strategy.value,
        parse_fraction(wrong, "--wrong-probability", high=Fraction(1)),
    )


def _incentives(reward: str | None, cost: str | None, stake: str | None, slash_bps: int) -> Incentives | None:
    given = [value for value in (reward, cost, stake) if value is not None]
    if not given:
        return None
    if reward is None or cost is None or stake is None:
        raise InvalidAnalysis("the incentive bound needs all of --reward, --cost and --stake")
    if not 0 <= slash_bps <= 10_000:
        raise InvalidAnalysis(f"--slash-bps is from 0 to 10000 basis points, got {slash_bps}")
    slash = parse_fraction(stake, "--stake") * slash_bps / 10_000
    return Incentives(parse_fraction(reward, "--reward"), parse_fraction(cost, "--cost"), slash)


def _show(value: Fraction | float | None, name: str) -> str:
    if value is None:
        return "-"
    return f"{float(value):.4f}" if name == "cost_factor" else f"{float(value):.6g}"


@app.command()
def calc(
    mode: ModeOption,
    dishonest_fraction: FractionOption,
    n: NOption = None,
    p: POption = None,
    nodes: Annotated[int | None, typer.Option(help="Machines M replicas are drawn from (default: unbounded).")] = None,
    strategy: StrategyOption = StrategyChoice.colluding,
    wrong_probability: WrongOption = "1",
    max_referees: RefereesOption = DEFAULT_MAX_REFEREES,
    reward: Annotated[str | None, typer.Option(help="What a replica earns for one request.")] = None,
    cost: Annotated[str | None, typer.Option(help="What doing the work of one request costs it.")] = None,
    stake: Annotated[str | None, typer.Option(help="Its provider's stake (same unit as reward and cost).")] = None,
    slash_bps: Annotated[int, typer.Option(help="Share of the stake a conviction slashes.")] = DEVNET_SLASH_BPS,
    as_json: JsonFlag = False,
) -> None:
    """Exact probabilities, cost factor and the replication rate above which honesty pays."""
    chosen = build_mode(mode, n, p)
    adversary = _adversary(dishonest_fraction, strategy, wrong_probability)
    incentives = _incentives(reward, cost, stake, slash_bps)
    finite = analyse(chosen, adversary, Network(nodes, max_referees)) if nodes is not None else None
    unbounded = analyse(chosen, adversary, Network(None, max_referees))
    bound = incentive_bound(chosen, adversary, incentives, Network(nodes, max_referees)) if incentives else None
    if as_json:
        print_json(
            {
                "finite": None if finite is None else finite.to_json(),
                "unbounded": unbounded.to_json(),
                "incentives": None if bound is None else bound.to_json(),
            }
        )
        return
    _print_calc(finite, unbounded)
    if bound is not None:
        _print_bound(bound, nodes)


def _print_calc(finite: SecurityReport | None, unbounded: SecurityReport) -> None:
    adversary = unbounded.adversary
    title = f"{unbounded.mode}, {adversary.strategy} adversary holding r = {adversary.fraction}"
    if adversary.strategy == "lazy":
        title += f", wrong w.p. q = {adversary.wrong}"
    table = Table("quantity", title=title)
    if finite is not None:
        table.add_column(f"M = {finite.network.nodes} ({finite.dishonest_nodes} dishonest)", justify="right")
    table.add_column("unbounded network", justify="right")
    for name, label in ROWS.items():
        cells = [_show(report.metrics()[name], name) for report in (finite, unbounded) if report is not None]
        table.add_row(label, *cells)
    console.print(table)


def _print_bound(bound: IncentiveReport, nodes: int | None) -> None:
    money = bound.incentives
    table = Table(show_header=False, title=f"incentives ({'M = ' + str(nodes) if nodes else 'unbounded network'})")
    table.add_row(
        "reward R / cost C / slash S", f"{float(money.reward):g} / {float(money.cost):g} / {float(money.slash):g}"
    )
    table.add_row("conviction needed C/(R+S)", f"{float(money.threshold):.6g}")
    table.add_row("P(cheater convicted)", f"{float(bound.caught):.6g}")
    table.add_row("gain of cheating (C)", f"{float(bound.gain):.6g}")
    table.add_row("expected loss P·(R+S)", f"{float(bound.expected_loss):.6g}")
    verdict = "[green]yes[/]" if bound.honest_rational else "[red]no[/]"
    table.add_row("honesty is rational", verdict)
    if bound.mode.kind == "cross":
        rate = "none (even p = 1 is not enough)" if bound.min_rate is None else f"p > {float(bound.min_rate):.6g}"
        table.add_row(f"replication rate needed (N = {bound.mode.n})", rate)
    if bound.mode.kind != "single":
        table.add_row("smallest N that suffices", "none up to 32" if bound.min_n is None else str(bound.min_n))
    console.print(table)


@app.command(name="simulate")
def simulate_command(
    mode: ModeOption,
    dishonest_fraction: FractionOption,
    n: NOption = None,
    p: POption = None,
    nodes: Annotated[int, typer.Option(help="Machines in the simulated network.")] = 10_000,
    requests: Annotated[int, typer.Option(help="Requests to simulate.")] = 1_000_000,
    strategy: StrategyOption = StrategyChoice.colluding,
    wrong_probability: WrongOption = "1",
    max_referees: RefereesOption = DEFAULT_MAX_REFEREES,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same numbers.")] = 0,
    confidence: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
    as_json: JsonFlag = False,
) -> None:
    """Monte-Carlo estimates with confidence intervals, beside the closed forms."""
    config = SimulationConfig(
        build_mode(mode, n, p),
        _adversary(dishonest_fraction, strategy, wrong_probability),
        nodes=nodes,
        requests=requests,
        seed=seed,
        max_referees=max_referees,
        confidence=confidence,
    )
    started = time.monotonic()
    if as_json:
        print_json(simulate(config).to_json())
        return
    columns = (
        TextColumn("[bold]simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bars:
        task = bars.add_task("requests", total=config.requests)
        report = simulate(config, lambda done: bars.advance(task, done))
    _print_simulation(report, time.monotonic() - started)


def _print_simulation(report: SimulationReport, seconds: float) -> None:
    config = report.config
    level = f"{config.confidence:.1%}".replace(".0%", "%")
    table = Table(
        "quantity",
        "estimate",
        f"{level} interval",
        "closed form",
        "inside",
        title=f"{config.mode}, {config.adversary.strategy} adversary holding r = {config.adversary.fraction}",
    )
    for item in report.estimates:
        interval = "-" if item.low is None else f"[{_show(item.low, item.name)}, {_show(item.high, item.name)}]"
        inside = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[item.inside]
        table.add_row(
            ROWS[item.name], _show(item.value, item.name), interval, _show(item.closed_form, item.name), inside
        )
    console.print(table)
    console.print(
        f"{config.requests:,} requests over {config.nodes:,} nodes ({report.dishonest_nodes:,} dishonest), "
        f"seed {config.seed}, {seconds:.1f} s"
    )

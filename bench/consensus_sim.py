"""Monte-Carlo simulator throughput and accuracy: requests per second per mode and strategy, and how many
estimates land in their confidence interval around the closed form.

    .venv/bin/python bench/consensus_sim.py [--requests 1000000] [--nodes 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

from cloister.consensus.modes import parse_mode
from cloister.consensus.security import Adversary
from cloister.consensus.simulate import SimulationConfig, simulate

CASES = [
    ("single", Adversary(Fraction(1, 10), "lazy", Fraction(1, 2))),
    ("sampling:3", Adversary(Fraction(1, 10))),
    ("sampling:3", Adversary(Fraction(1, 5), "lazy", Fraction(1, 2))),
    ("cross:0.01,1", Adversary(Fraction(1, 10))),
    ("cross:0.1,2", Adversary(Fraction(1, 5), "lazy", Fraction(1, 2))),
    ("obfuscated:2", Adversary(Fraction(1, 3))),
    ("sampling:16", Adversary(Fraction(1, 3), "lazy", Fraction(1))),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'mode':<14} {'strategy':<10} {'r':>5} {'seconds':>8} {'requests/s':>12} {'in 95% CI':>10}")
    for mode, adversary in CASES:
        config = SimulationConfig(parse_mode(mode), adversary, nodes=args.nodes, requests=args.requests, seed=args.seed)
        start = time.perf_counter()
        report = simulate(config)
        seconds = time.perf_counter() - start
        judged = [item.inside for item in report.estimates if item.inside is not None]
        print(
            f"{mode:<14} {adversary.strategy:<10} {adversary.fraction!s:>5} {seconds:>8.2f} "
            f"{args.requests / seconds:>12,.0f} {sum(judged):>5}/{len(judged):<4}"
        )


if __name__ == "__main__":
    main()

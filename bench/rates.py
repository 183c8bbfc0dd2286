"""Shared timing for the benchmarks: operations per second, warmed up, over a minimum duration."""

from __future__ import annotations

import time
from collections.abc import Callable


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second over at least ``seconds`` of repeated calls, after one warm-up call."""
    operation()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        operation()
        count += 1
    return count / elapsed


def compare_modes(
    case: str,
    raw_name: str,
    raw_check: Callable[[], object],
    verify: Callable[[object], object],
    modes: dict[str, object],
    seconds: float,
) -> list[dict[str, object]]:
    """One row for the raw signature check and one per verifier mode; ``cost_in_signatures`` = raw rate / rate."""
    raw = rate(raw_check, seconds)
    rows: list[dict[str, object]] = [{"case": case, "mode": raw_name, "per_s": raw, "cost_in_signatures": 1.0}]
    for mode, options in modes.items():
        per_s = rate(lambda options=options: verify(options), seconds)  # type: ignore[misc]
        rows.append({"case": case, "mode": mode, "per_s": per_s, "cost_in_signatures": raw / per_s})
    return rows


def print_modes(rows: list[dict[str, object]]) -> None:
    print(f"{'case':<34} {'mode':<18} {'verifications/s':>16} {'cost in sigs':>16}")
    for row in rows:
        print(f"{row['case']:<34} {row['mode']:<18} {row['per_s']:>16.1f} {row['cost_in_signatures']:>16.2f}")

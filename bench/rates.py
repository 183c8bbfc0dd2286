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

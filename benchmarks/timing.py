"""The timing loop the benchmarks share: every step is warmed up, then in each round every step runs
``n`` times in turn (interleaved, so machine drift hits all alike); the result is the median over rounds
of the mean time per step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping


def measure(steps: Mapping[Hashable, Callable[[], None]], n: int, rounds: int, warmup: int = 1) -> dict:
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict = {key: [] for key in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            for _ in range(n):
                step()
            times[key].append((time.perf_counter() - start) / n)
    return {key: statistics.median(v) for key, v in times.items()}

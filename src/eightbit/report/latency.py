"""Latency of two sessions measured side by side: alternating blocks in one process, medians."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class LatencyPair:
    first_ms: float
    second_ms: float

    @property
    def speedup(self) -> float:
        """How many times faster the second is than the first."""
        return self.first_ms / self.second_ms if self.second_ms > 0 else float("inf")


def interleaved(
    first: Callable[[], object], second: Callable[[], object], rounds: int = 10, per_block: int = 3,
    warmup: int = 2,
) -> LatencyPair:
    """Median per-run latency (ms) of two callables, timed in alternating blocks.

    Alternation exposes both to the same machine load, so their ratio is fair on a shared,
    noisy machine even when the absolute numbers drift.
    """
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for round_index in range(rounds):
        order = (0, 1) if round_index % 2 == 0 else (1, 0)
        for which in order:
            call = (first, second)[which]
            start = time.perf_counter()
            for _ in range(per_block):
                call()
            times[which].append((time.perf_counter() - start) / per_block * 1e3)
    return LatencyPair(statistics.median(times[0]), statistics.median(times[1]))

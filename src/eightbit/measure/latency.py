"""Latency of two sessions measured side by side: alternating blocks in one process, medians."""

from __future__ import annotations

import dataclasses
import math
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


# A timed block lasts at least this long (more runs per block for fast callables): a block of a few
# tens of microseconds is timer and scheduler noise.
LEAST_BLOCK_MS = 20.0


def interleaved(
    first: Callable[[], object], second: Callable[[], object], rounds: int = 10, per_block: int = 3,
    warmup: int = 2,
) -> LatencyPair:
    """Median per-run latency (ms) of two callables, timed in alternating blocks.

    Alternation exposes both to the same machine load, so their ratio is fair on a shared,
    noisy machine even when the absolute numbers drift.
    """
    medians = interleaved_medians({"first": first, "second": second}, rounds, per_block, warmup)
    return LatencyPair(medians["first"], medians["second"])


def interleaved_medians(
    calls: dict[str, Callable[[], object]], rounds: int = 10, per_block: int = 3, warmup: int = 2,
) -> dict[str, float]:
    """Median per-run latency (ms) of each callable, timed in blocks taken in turn.

    Each round runs one block of every callable; the order rotates from round to round so that
    none is always first (after a pause) or last. A block is at least `per_block` runs, more where
    that lasts less than LEAST_BLOCK_MS (counted from the last warm-up run).
    """
    names = list(calls)
    runs = dict.fromkeys(names, per_block)
    for _ in range(max(warmup, 1)):
        for name in names:
            start = time.perf_counter()
            calls[name]()
            once_ms = (time.perf_counter() - start) * 1e3
            runs[name] = max(per_block, math.ceil(LEAST_BLOCK_MS / max(once_ms, 1e-3)))
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        order = names[shift:] + names[:shift]
        if round_index % 2:
            order.reverse()
        for name in order:
            call = calls[name]
            start = time.perf_counter()
            for _ in range(runs[name]):
                call()
            times[name].append((time.perf_counter() - start) / runs[name] * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}

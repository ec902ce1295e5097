"""Clipping ranges chosen from a histogram (docs/quantization.md, eq. 15-16b).

Min/max keeps every outlier inside the grid and pays for it with a coarse step everywhere
else. These methods clip the tails instead, each with its own criterion. They all read the
same histogram: `negative[i]` and `positive[i]` count values whose magnitude lies in
[i * width, (i + 1) * width); together that is one histogram with uniform edges from
-bins * width to +bins * width.
"""

from __future__ import annotations

import numpy as np

DEFAULT_PERCENTILE = 99.99
# Candidate bounds per side searched by the MSE method.
MSE_CANDIDATES = 96
# Levels of the u8 grid the ranges are chosen for.
LEVELS = 256


def _merged(counts: np.ndarray, factor: int) -> np.ndarray:
    """Each run of `factor` neighbouring bins summed into one (unchanged if `factor` does not divide them)."""
    factor = factor if factor >= 1 and len(counts) % factor == 0 else 1
    return counts.reshape(-1, factor).sum(axis=1).astype(np.float64)


def _combined(negative: np.ndarray, positive: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges): one histogram over [-bins * width, bins * width]."""
    counts = np.concatenate([negative[::-1], positive]).astype(np.float64)
    bins = len(negative)
    edges = (np.arange(2 * bins + 1) - bins) * width
    return counts, edges


def percentile_range(
    negative: np.ndarray, positive: np.ndarray, width: float, percentile: float = DEFAULT_PERCENTILE
) -> tuple[float, float]:
    """(15) Drop (100 - percentile) % of the values, half from each tail; bounds on bin edges, widened to 0."""
    counts, edges = _combined(negative, positive, width)
    if not counts.any():
        return 0.0, 0.0
    cumulative = np.cumsum(counts)
    total = cumulative[-1]
    tail = total * (100.0 - percentile) / 200.0
    first = int(np.searchsorted(cumulative, tail, side="right"))  # first bin whose cumulative count exceeds the tail
    last = int(np.searchsorted(cumulative, total - tail, side="left"))  # bin where the top tail starts
    low, high = edges[first], edges[min(last + 1, len(edges) - 1)]
    return min(float(low), 0.0), max(float(high), 0.0)


# The MSE search reads the histogram merged into groups of this many bins.
MSE_MERGE = 8


def mse_range(negative: np.ndarray, positive: np.ndarray, width: float) -> tuple[float, float]:
    """(16) The [low, high] minimizing the expected squared error of quantizing the histogram.

    Inside the range the error of a value is step^2 / 12 (uniform rounding error); outside
    it is the squared distance to the bound it is clipped to. Candidates: MSE_CANDIDATES
    edges per side, geometrically spaced between 0 and the outermost occupied bin.
    """
    merged_negative, merged_positive = _merged(negative, MSE_MERGE), _merged(positive, MSE_MERGE)
    width *= len(negative) / len(merged_negative)
    negative, positive = merged_negative, merged_positive
    counts, edges = _combined(negative, positive, width)
    if not counts.any():
        return 0.0, 0.0
    bins = len(negative)
    occupied = np.flatnonzero(counts)
    first, last = int(occupied[0]), int(occupied[-1])
    weights, positions = counts[occupied], ((edges[:-1] + edges[1:]) / 2.0)[occupied]
    # Geometric spacing: as fine near zero as far out, in relative terms (heavy tails need both).
    def offsets(reach: int) -> np.ndarray:
        if not reach:
            return np.zeros(1, dtype=int)
        return np.unique(np.geomspace(1, reach, MSE_CANDIDATES).round().astype(int))

    lows = edges[bins - offsets(bins - min(first, bins))]
    highs = edges[bins + offsets(max(last + 1, bins) - bins)]
    best, best_error = (float(edges[first]), float(edges[last + 1])), np.inf
    above = np.clip(positions[:, None] - highs[None, :], 0.0, None) ** 2
    below_high = positions[:, None] <= highs[None, :]
    # error[h] for one candidate low at a time: sum over bins of count * (clip error or step^2 / 12).
    for low in lows:
        step = (highs - low) / (LEVELS - 1)
        below = np.clip(low - positions, 0.0, None)[:, None] ** 2
        inside = (positions >= low)[:, None] & below_high
        error = weights @ (below + above + inside * (step[None, :] ** 2 / 12.0))
        column = int(np.argmin(error))
        if error[column] < best_error:
            best_error, best = float(error[column]), (float(low), float(highs[column]))
    return min(best[0], 0.0), max(best[1], 0.0)


# The entropy method reads the histogram merged to this many bins per side, and tries at most
# this many candidate thresholds.
ENTROPY_BINS = 2048
ENTROPY_CANDIDATES = 128
# Below this fraction of the values on the negative side, a tensor is treated as one-sided.
ONE_SIDED = 1e-4


# Probability given to a bin Q leaves empty where P is not, so that KL(P || Q) stays finite.
SMOOTHING = 1e-4


def _kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> float:
    """KL(P || Q) of two count vectors, normalized; bins where P is 0 contribute nothing."""
    p = reference / reference.sum()
    q = candidate / candidate.sum() if candidate.sum() > 0 else np.zeros_like(p)
    live = p > 0
    q = np.where(live & (q == 0), SMOOTHING, q)
    q = q / q.sum()
    return float(np.sum(p[live] * np.log(p[live] / q[live])))


def entropy_threshold(magnitudes: np.ndarray, width: float, levels: int) -> float:
    """(15b) The threshold t (a bin edge) minimizing KL(P_t || Q_t) over a magnitude histogram.

    P_t: the bins below t, with every count beyond t added to the last one (what clipping at t
    does); Q_t: the bins below t (without the clipped counts) merged into `levels` equal groups,
    each group's count spread evenly over its non-empty bins (what a grid of `levels` steps over
    [0, t] can tell apart). A low t costs KL through the clipped mass P_t holds and Q_t lacks; a
    high t through the detail Q_t's coarse groups lose.
    """
    counts = _merged(magnitudes, len(magnitudes) // ENTROPY_BINS)
    width *= len(magnitudes) / len(counts)
    # Bin 0 holds (near-)zeros, which every candidate grid represents (eq. 2): a spike there, as
    # after a ReLU, would otherwise dominate both distributions and favour clipping.
    counts[0] = 0.0
    occupied = np.flatnonzero(counts)
    if occupied.size == 0:
        return 0.0
    last = int(occupied[-1]) + 1
    if last <= levels:
        return last * width
    candidates = np.unique(np.linspace(levels, last, min(ENTROPY_CANDIDATES, last - levels + 1)).round().astype(int))
    best, best_divergence = last, np.inf
    for stop in candidates:
        kept = counts[:stop]
        reference = kept.copy()
        reference[-1] += counts[stop:].sum()
        starts = np.arange(levels) * stop // levels  # `levels` groups of contiguous bins
        group = np.repeat(np.arange(levels), np.diff(np.append(starts, stop)))
        totals = np.add.reduceat(kept, starts)
        nonzero = np.add.reduceat((kept > 0).astype(np.float64), starts)
        spread = np.divide(totals, nonzero, out=np.zeros(levels), where=nonzero > 0)
        candidate = np.where(kept > 0, spread[group], 0.0)
        divergence = _kl_divergence(reference, candidate)
        if divergence < best_divergence:
            best, best_divergence = int(stop), divergence
    return best * width


def entropy_range(negative: np.ndarray, positive: np.ndarray, width: float) -> tuple[float, float]:
    """(15b) KL-divergence calibration: a one-sided tensor gets [0, t] with t chosen for all
    LEVELS - 1 steps; a two-sided one gets [-t, t] from its folded magnitudes, half the steps
    per side (bounds never exceed what was seen: the observer clips them to min/max)."""
    total = negative.sum() + positive.sum()
    if total == 0:
        return 0.0, 0.0
    if negative.sum() <= ONE_SIDED * total:
        return 0.0, entropy_threshold(positive, width, LEVELS - 1)
    if positive.sum() <= ONE_SIDED * total:
        return -entropy_threshold(negative, width, LEVELS - 1), 0.0
    threshold = entropy_threshold(negative + positive, width, LEVELS // 2)
    return -threshold, threshold

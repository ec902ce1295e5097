"""Power-of-two scales: scale = 2^k, chosen to minimize the quantization error (docs eq. 22-23)."""

from __future__ import annotations

import numpy as np

from eightbit.config import IntegerFormat

# Exponents tried below the one whose grid covers the whole range: each halves the step and
# clips more; beyond 8 the clipped range is 1/256 of the data's, never the better choice.
CANDIDATES = 8
# Scales are stored as float32: below 2^-126 they would be subnormal, and 0 below 2^-149.
SMALLEST_EXPONENT = -126


def covering_exponent(magnitude: np.ndarray | float, qmax: int) -> np.ndarray:
    """Smallest k with qmax * 2^k >= magnitude (eq. 22); 0 for a zero magnitude."""
    magnitude = np.asarray(magnitude, dtype=np.float64)
    safe = np.where(magnitude > 0, magnitude, float(qmax))
    return np.ceil(np.log2(safe / qmax)).astype(np.int64)


def power_of_two_scale(scale: np.ndarray) -> np.ndarray:
    """The smallest power of two >= scale, as float32 (a scale of 1 stays 1)."""
    scale = np.asarray(scale, dtype=np.float64)
    return np.exp2(np.ceil(np.log2(scale))).astype(np.float32)


def _squared_error(values: np.ndarray, scale: np.ndarray, fmt: IntegerFormat, axis: int) -> np.ndarray:
    codes = np.clip(np.rint(values / scale), fmt.qmin, fmt.qmax)
    return ((values - codes * scale) ** 2).sum(axis=axis)


def weight_scales(array: np.ndarray, axis: int | None, fmt: IntegerFormat) -> np.ndarray:
    """Per-channel (along `axis`) or per-tensor 2^k minimizing sum (w - 2^k q(w))^2 (eq. 23)."""
    values = np.asarray(array, dtype=np.float64)
    values = values.reshape(1, -1) if axis is None else np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    top = covering_exponent(np.abs(values).max(axis=1, initial=0.0), fmt.qmax)
    # (channels, candidates), floored like every other scale (eq. 22 via choose_qparams)
    exponents = np.maximum(top[:, None] - np.arange(CANDIDATES + 1)[None, :], SMALLEST_EXPONENT)
    errors = np.stack([_squared_error(values, np.exp2(exponents[:, [i]]), fmt, axis=1)
                       for i in range(CANDIDATES + 1)], axis=1)
    best = exponents[np.arange(len(exponents)), np.argmin(errors, axis=1)]  # ties: the wider grid (first)
    scales = np.exp2(best).astype(np.float32)
    return scales if axis is not None else scales.reshape(())


def histogram_range(negative: np.ndarray, positive: np.ndarray, width: float,
                    fmt: IntegerFormat) -> tuple[float, float]:
    """(-qmax 2^k, qmax 2^k) for the k minimizing the histogram's expected squared error (eq. 23).

    Inside the grid a value's error is step^2 / 12; outside, the squared distance to the end it
    is clipped to. The range returned maps back to exactly 2^k through eq. 4 and eq. 22.
    """
    bins = len(negative)
    counts = np.concatenate([negative[::-1], positive]).astype(np.float64)
    if not counts.any():
        return 0.0, 0.0
    centres = (np.arange(-bins, bins) + 0.5) * width
    occupied = counts > 0
    counts, centres = counts[occupied], centres[occupied]
    top = int(covering_exponent(np.abs(centres).max() + width / 2, fmt.qmax))
    best, best_error = top, np.inf
    for k in range(top, top - CANDIDATES - 1, -1):
        step = 2.0**k
        low, high = fmt.qmin * step, fmt.qmax * step
        clipped = np.clip(centres, low, high)
        error = counts @ np.where(clipped == centres, step**2 / 12.0, (centres - clipped) ** 2)
        if error < best_error:
            best, best_error = k, error
    return -fmt.qmax * 2.0**best, fmt.qmax * 2.0**best

"""Integer pooling: max over codes; averages as integer sums divided by the window count."""

from __future__ import annotations

import numpy as np

from eightbit.kernels.requantize import Requantization, requantize
from eightbit.kernels.windows import windows

# Sums are divided by the count at this many fraction bits before requantization, so the
# division adds an error below 2^-17 of an output step instead of a second rounding.
DIVISION_BITS = 16


def max_pool(x: np.ndarray, kernel: tuple[int, ...], strides: tuple[int, ...], pads: tuple[int, ...],
             dilations: tuple[int, ...], ceil_mode: bool, qmin: int) -> np.ndarray:
    """The largest code under each window; padding never wins (it holds qmin)."""
    rank = len(kernel)
    view = windows(x, kernel, strides, dilations, pads, pad_value=qmin, ceil_mode=ceil_mode)
    return view.max(axis=tuple(range(-rank, 0)))


def _rounded_division(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """round(numerator / denominator), ties away from zero, denominator > 0."""
    magnitude = (np.abs(numerator) * 2 + denominator) // (2 * denominator)
    return np.sign(numerator) * magnitude


def average(total: np.ndarray, count: np.ndarray | int, output: Requantization) -> np.ndarray:
    """q_out = clamp(M total / count + zp_out) with output's M = s_in / (s_out 2^DIVISION_BITS)."""
    scaled = _rounded_division(total.astype(np.int64) << DIVISION_BITS, np.asarray(count, dtype=np.int64))
    return requantize(scaled, output)


def average_pool(x: np.ndarray, zero_point: int, kernel: tuple[int, ...], strides: tuple[int, ...],
                 pads: tuple[int, ...], dilations: tuple[int, ...], ceil_mode: bool, count_include_pad: bool,
                 output: Requantization) -> np.ndarray:
    """Mean of (x - zp) over each window; padded positions count only when count_include_pad."""
    rank = len(kernel)
    axes = tuple(range(-rank, 0))
    shifted = x.astype(np.int64) - zero_point
    total = windows(shifted, kernel, strides, dilations, pads, pad_value=0, ceil_mode=ceil_mode).sum(axis=axes)
    if count_include_pad:
        # Explicit padding counts; positions past it (ceil_mode overhang) never do.
        ones = np.ones((1, 1) + x.shape[2:], dtype=np.int64)
        inside = np.pad(ones, [(0, 0), (0, 0)] + [(pads[i], pads[rank + i]) for i in range(rank)],
                        constant_values=1)
        count = windows(inside, kernel, strides, dilations, (0,) * (2 * rank), pad_value=0,
                        ceil_mode=ceil_mode)
        count = count.sum(axis=axes)
        count = count[(Ellipsis,) + tuple(slice(0, s) for s in total.shape[2:])]
    else:
        ones = np.ones((1, 1) + x.shape[2:], dtype=np.int64)
        count = windows(ones, kernel, strides, dilations, pads, pad_value=0, ceil_mode=ceil_mode).sum(axis=axes)
    return average(total, np.maximum(count, 1), output)


def global_average_pool(x: np.ndarray, zero_point: int, output: Requantization) -> np.ndarray:
    """Mean of (x - zp) over all spatial positions, keeping them as size-1 axes."""
    axes = tuple(range(2, x.ndim))
    total = (x.astype(np.int64) - zero_point).sum(axis=axes, keepdims=True)
    return average(total, int(np.prod(x.shape[2:])), output)

"""Bias correction: cancel the mean output error that rounding the weights adds (docs eq. 32).

Rounding a weight W to W + dW shifts a layer's output by dW x; over the data its mean shift is
dW E[x], a constant per output channel. Subtracting it from the bias leaves the rounding error
zero-mean. It matters where a channel's output is a near-cancellation of large terms (a depthwise
filter over a flat background): there the small dW meets a large E[x] and the shift, not the
noise, dominates. E[x] is measured per input channel on calibration samples; padding at the
borders is ignored (the correction is exact for outputs whose window lies inside the input).

The static schemes measure the shift instead (eq. 7b): the mean difference between the float and
the quantized layer's output, which includes what rounded activations add too.
"""

from __future__ import annotations

import numpy as np

from eightbit.config import IntegerFormat


def conv_output_shift(weight_error: np.ndarray, input_mean: np.ndarray, group: int = 1) -> np.ndarray:
    """Mean output shift per output channel of a Conv whose weight [O, I/group, k...] is off by
    `weight_error`, for inputs with per-channel mean `input_mean` [I] (eq. 32)."""
    outputs, per_group = weight_error.shape[:2]
    summed = weight_error.reshape(outputs, per_group, -1).sum(axis=-1, dtype=np.float64)  # [O, I/group]
    means = np.asarray(input_mean, np.float64).reshape(group, per_group)
    group_of_output = np.arange(outputs) // (outputs // group)
    return np.einsum("oi,oi->o", summed, means[group_of_output])


def matmul_output_shift(weight_error: np.ndarray, input_mean: np.ndarray) -> np.ndarray:
    """Mean output shift per column of x @ W with W [K, N] off by `weight_error`, E[x] = `input_mean` [K]."""
    return np.asarray(input_mean, np.float64) @ weight_error.astype(np.float64)


def corrected_bias_codes(codes: np.ndarray, scale: np.ndarray, mean_error: np.ndarray,
                         fmt: IntegerFormat) -> np.ndarray:
    """Integer bias codes at `scale` moved by the measured mean output error (float minus quantized, per
    output channel), saturated to `fmt` (eq. 7b)."""
    moved = np.asarray(codes, np.float64) + np.rint(np.asarray(mean_error, np.float64) / np.asarray(scale, np.float64))
    return np.clip(moved, fmt.qmin, fmt.qmax).astype(np.asarray(codes).dtype)

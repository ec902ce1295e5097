"""Cross-layer equalization before a depthwise convolution (docs/quantization.md, eq. 35).

A linear op P, a positively homogeneous function f (Relu, LeakyRelu, pooling: f(s·x) = s·f(x) for
s > 0) and a depthwise convolution C compute C(f(P(x))). Multiplying P's output channel i by s_i and
C's filter i by 1/s_i computes the same function. Per-channel weight grids make both weight tensors
indifferent to s; what changes is the tensor between them, which has one grid for all its channels:
a channel whose range is a tenth of the largest uses a tenth of the grid's steps. Scaled to fill
the grid, it is rounded ten times more finely relative to its values.
"""

from __future__ import annotations

import numpy as np

# Factors stay within [1, MAX_FACTOR]: a channel (nearly) silent on the calibration samples is not blown
# up to fill the grid on their evidence.
MAX_FACTOR = 32.0
# A channel is scaled to reach 1/HEADROOM of the grid's bound, not the bound: its largest value on other
# samples may exceed the largest on the calibration samples, and every equalized channel would clip there.
HEADROOM = 2.0


def equalizing_factors(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per channel, 1/HEADROOM of the largest s_i with s_i·[low_i, high_i] inside [min low, max high], the
    grid the whole tensor has now (eq. 35), within [1, MAX_FACTOR]; channels that never moved keep 1. `low`, `high`:
    each channel's range over the calibration samples."""
    low, high = np.minimum(np.asarray(low, np.float64), 0.0), np.maximum(np.asarray(high, np.float64), 0.0)
    tensor_low, tensor_high = low.min(), high.max()
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(high > 0, tensor_high / high, np.inf)
        down = np.where(low < 0, tensor_low / low, np.inf)
    room = np.minimum(up, down) / HEADROOM
    return np.where(np.isfinite(room), np.clip(room, 1.0, MAX_FACTOR), 1.0).astype(np.float32)

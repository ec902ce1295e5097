"""Cross-layer equalization (docs/quantization.md, eq. 35-35c).

A linear op P, a positively homogeneous function f (Relu, LeakyRelu, pooling: f(s·x) = s·f(x) for
s > 0) and a depthwise convolution C compute C(f(P(x))). Multiplying P's output channel i by s_i and
C's filter i by 1/s_i computes the same function. Per-channel weight grids make both weight tensors
indifferent to s; what changes is the tensor between them, which has one grid for all its channels:
a channel whose range is a tenth of the largest uses a tenth of the grid's steps. Scaled to fill
the grid, it is rounded ten times more finely relative to its values. Where weights have one grid per
tensor (the po2 scheme), the weights are what the factors balance instead (eq. 35c), and C may also be a
convolution that mixes the channels.
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


def swish_equalizing_factors(low: np.ndarray, high: np.ndarray, filter_power: np.ndarray) -> np.ndarray:
    """Per channel, f_i <= 1 for a tensor past a hard-swish, read by a depthwise convolution whose filters on
    channel i have squared norm `filter_power[i]` (eq. 35b): channels above a level M are scaled down to
    it, M chosen among the channels' maxima to minimize the rounding noise the convolution passes on,
    (grid span)^2 · sum_i filter_power_i / f_i^2. Scaling down keeps the hard-swish's cutoff, -3 f_i, inside
    the [-3, 0] every channel already needs; scaling up would stretch the grid below zero."""
    low, high = np.minimum(np.asarray(low, np.float64), 0.0), np.maximum(np.asarray(high, np.float64), 0.0)
    power = np.asarray(filter_power, np.float64)
    live = high > 0
    if not np.any(live):
        return np.ones(high.size, np.float32)

    def noise(level: float) -> tuple[float, np.ndarray]:
        factors = np.where(live, np.minimum(1.0, level / np.where(live, high, 1.0)), 1.0)
        span = (high * factors).max() - (low * factors).min()
        return span**2 * float((power / factors**2).sum()), factors

    _, best = min((noise(level) for level in np.unique(high[live])), key=lambda pair: pair[0])
    return best.astype(np.float32)


def weight_equalizing_factors(producer_range: np.ndarray, consumer_range: np.ndarray) -> np.ndarray:
    """Per channel, s_i = sqrt(r2_i / r1_i) within [1/MAX_FACTOR, MAX_FACTOR], for weights on one grid per tensor
    (eq. 35c, Nagel et al. 2019): P's output channel i, whose weights reach r1_i, times s_i and C's weights on
    channel i, reaching r2_i, divided by it leave both at sqrt(r1_i · r2_i), so that no channel's weights are
    a few codes of a grid another channel spans. Channels whose weights are all zero on either side keep 1."""
    r1 = np.asarray(producer_range, np.float64)
    r2 = np.asarray(consumer_range, np.float64)
    live = (r1 > 0) & (r2 > 0)
    ratio = np.sqrt(np.where(live, r2, 1.0) / np.where(live, r1, 1.0))
    return np.where(live, np.clip(ratio, 1.0 / MAX_FACTOR, MAX_FACTOR), 1.0).astype(np.float32)

"""Weight grids: one (scale, zero point) per tensor or per output channel, from the weights themselves."""

from __future__ import annotations

import numpy as np

from eightbit.config import IntegerFormat
from eightbit.quant.affine import choose_qparams
from eightbit.quant.power_of_two import power_of_two_scale, weight_scales

# Kept between the bias and the edge of its format in eq. 7a: the bias scale s_in · s_w is
# rounded to float32 (relative error 2^-24) before the bias is divided by it.
_BIAS_MARGIN = 1e-5


def least_weight_scale(bias: np.ndarray, input_scale: np.ndarray | float, bias_fmt: IntegerFormat) -> np.ndarray:
    """Per output channel, the smallest weight scale at which the bias fits `bias_fmt` at scale
    s_in · s_w (eq. 7a): |b| / (s_in · qmax_b)."""
    bias = np.abs(np.asarray(bias, np.float64).reshape(-1))
    return bias * (1.0 + _BIAS_MARGIN) / (np.float64(np.max(input_scale)) * bias_fmt.qmax)


def weight_qparams(
    array: np.ndarray, fmt: IntegerFormat, axis: int | None, least_scale: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of a weight tensor, per channel along `axis` or per tensor.

    The range is the weights' own [min, max] (eq. 2-4: symmetric formats map the larger
    magnitude to qmax); power-of-two formats take the 2^k with the least squared error (eq. 23).
    `least_scale` (one per channel along `axis`) widens a channel's grid whose scale would be smaller
    (eq. 7a: a bias that fits). The converter and quantization-aware training both call this, so a
    trained model's weight grid is the one the converter would choose for the same weights.
    """
    array = np.asarray(array)
    if least_scale is not None and axis is None:
        raise ValueError("a least scale per channel needs per-channel weights (an axis)")
    if fmt.power_of_two:
        scale = weight_scales(array, axis, fmt)
        if least_scale is not None:
            least = np.maximum(np.asarray(least_scale, np.float64), np.finfo(np.float32).tiny)
            scale = np.maximum(scale, power_of_two_scale(least)).astype(np.float32)
        return scale, np.zeros(scale.shape, dtype=fmt.numpy_dtype)
    if axis is None:
        low, high = array.min(initial=0.0), array.max(initial=0.0)
    else:
        reduce = tuple(i for i in range(array.ndim) if i != axis)
        low, high = array.min(axis=reduce, initial=0.0), array.max(axis=reduce, initial=0.0)
    if least_scale is not None:
        low = np.minimum(np.asarray(low, np.float64), 0.0)
        if fmt.symmetric:
            high = np.maximum(high, least_scale * fmt.qmax)
        else:
            high = np.maximum(high, low + least_scale * (fmt.qmax - fmt.qmin))
    return choose_qparams(low, high, fmt)

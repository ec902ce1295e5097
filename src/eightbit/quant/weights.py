"""Weight grids: one (scale, zero point) per tensor or per output channel, from the weights themselves."""

from __future__ import annotations

import numpy as np

from eightbit.config import IntegerFormat
from eightbit.quant.affine import choose_qparams
from eightbit.quant.power_of_two import weight_scales


def weight_qparams(array: np.ndarray, fmt: IntegerFormat, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of a weight tensor, per channel along `axis` or per tensor.

    The range is the weights' own [min, max] (eq. 2-4: symmetric formats map the larger
    magnitude to qmax); power-of-two formats take the 2^k with the least squared error (eq. 23).
    The converter and quantization-aware training both call this, so a trained model's weight
    grid is the one the converter would choose for the same weights.
    """
    array = np.asarray(array)
    if fmt.power_of_two:
        scale = weight_scales(array, axis, fmt)
        return scale, np.zeros(scale.shape, dtype=fmt.numpy_dtype)
    if axis is None:
        low, high = array.min(initial=0.0), array.max(initial=0.0)
    else:
        reduce = tuple(i for i in range(array.ndim) if i != axis)
        low, high = array.min(axis=reduce, initial=0.0), array.max(axis=reduce, initial=0.0)
    return choose_qparams(low, high, fmt)

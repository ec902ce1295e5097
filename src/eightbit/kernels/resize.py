"""Nearest-neighbour resize of codes: output codes are input codes picked by index."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

_HALF = Fraction(1, 2)
_ROUNDING = {
    "round_prefer_floor": lambda x: math.ceil(x - _HALF),
    "round_prefer_ceil": lambda x: math.floor(x + _HALF),
    "floor": math.floor,
    "ceil": math.ceil,
}


def nearest_indices(in_size: int, out_size: int, scale: Fraction, transform: str, nearest_mode: str) -> np.ndarray:
    """Input index read by each output index along one axis (ONNX Resize, mode nearest).

    Exact rational index arithmetic (`scale` is the float32 scale as a fraction); no data
    passes through it.
    """
    rounding = _ROUNDING[nearest_mode]
    indices = []
    for out in range(out_size):
        if transform == "asymmetric":
            x = out / scale
        elif transform == "half_pixel":
            x = (out + _HALF) / scale - _HALF
        elif transform == "pytorch_half_pixel":
            x = (out + _HALF) / scale - _HALF if out_size > 1 else Fraction(0)
        elif transform == "align_corners":
            x = Fraction(out * (in_size - 1), out_size - 1) if out_size > 1 else Fraction(0)
        elif transform == "tf_half_pixel_for_nn":
            x = (out + _HALF) / scale
        else:
            raise ValueError(f"Resize coordinate_transformation_mode {transform!r} is not supported")
        indices.append(min(max(rounding(x), 0), in_size - 1))
    return np.array(indices, dtype=np.int64)


def gather_nearest(x: np.ndarray, indices: list[np.ndarray]) -> np.ndarray:
    """Pick x's codes along every axis by the given index arrays."""
    for axis, index in enumerate(indices):
        if len(index) != x.shape[axis] or np.any(index != np.arange(x.shape[axis])):
            x = np.take(x, index, axis=axis)
    return x

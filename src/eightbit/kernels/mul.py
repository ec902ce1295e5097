"""Integer elementwise multiplication."""

from __future__ import annotations

import numpy as np

from eightbit.kernels.requantize import Requantization, requantize


def mul(a: np.ndarray, b: np.ndarray, *, a_zero_point: int, b_zero_point: int, output: Requantization) -> np.ndarray:
    """q_out = clamp(M (a - zp_a)(b - zp_b) + zp_out), M = s_a s_b / s_out; numpy broadcasting."""
    product = (a.astype(np.int64) - a_zero_point) * (b.astype(np.int64) - b_zero_point)
    return requantize(product, output)

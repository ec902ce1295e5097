"""Integer matrix products: MatMul and Gemm accumulators."""

from __future__ import annotations

import numpy as np

from eightbit.kernels.exact_sum import exact_matmul


def matmul(a: np.ndarray, a_zero_point: int, b: np.ndarray, b_zero_point: np.ndarray | int) -> np.ndarray:
    """acc = (a - zp_a) @ (b - zp_b), numpy broadcasting; zp_b may be per column (last axis of b)."""
    return exact_matmul(a.astype(np.int64) - a_zero_point, b.astype(np.int64) - np.asarray(b_zero_point, np.int64))


def gemm(a: np.ndarray, a_zero_point: int, b: np.ndarray, b_zero_point: np.ndarray | int, bias: np.ndarray | None,
         trans_b: bool) -> np.ndarray:
    """acc = (a - zp_a) @ op(b - zp_b) + bias, op = transpose when trans_b; zp_b per output column."""
    if trans_b:
        b = b.T
    acc = matmul(a, a_zero_point, b, b_zero_point)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    return acc

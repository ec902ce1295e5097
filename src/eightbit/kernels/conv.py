"""Integer convolution, grouped and depthwise included: int32 accumulators of (x - zp_x) * (w - zp_w) + bias."""

from __future__ import annotations

import numpy as np

from eightbit.kernels.exact_sum import exact_matmul
from eightbit.kernels.windows import windows


def conv(x: np.ndarray, x_zero_point: int, w: np.ndarray, w_zero_point: np.ndarray, bias: np.ndarray | None,
         strides: tuple[int, ...], pads: tuple[int, ...], dilations: tuple[int, ...], group: int) -> np.ndarray:
    """acc[n, m, *o] = sum_{c, k} (x[n, c, o*s + k*d - pad] - zp_x) * (w[m, c, k] - zp_w[m]) + bias[m].

    x: (N, C, *spatial) codes; w: (M, C/group, *kernel) codes; w_zero_point per output channel
    (shape (M,)) or scalar; bias int32 (M,) or None. Padding is real zero (code zp_x).
    Returns int64 accumulators (N, M, *out).
    """
    rank = w.ndim - 2
    kernel = w.shape[2:]
    shifted = x.astype(np.int64) - x_zero_point
    cols = windows(shifted, kernel, strides, dilations, pads, pad_value=0)  # (N, C, *out, *kernel)
    n, channels = cols.shape[:2]
    out = cols.shape[2:2 + rank]
    m, per_group = w.shape[0], w.shape[1]
    weights = w.astype(np.int64) - np.asarray(w_zero_point, dtype=np.int64).reshape((-1,) + (1,) * (rank + 1))
    # (N, G, C/G, *out, *kernel) -> (G, N * out, C/G * kernel)
    cols = cols.reshape((n, group, per_group) + out + kernel)
    order = (1, 0) + tuple(range(3, 3 + rank)) + (2,) + tuple(range(3 + rank, 3 + 2 * rank))
    cols = cols.transpose(order).reshape(group, n * int(np.prod(out)), per_group * int(np.prod(kernel)))
    weights = weights.reshape(group, m // group, per_group * int(np.prod(kernel))).transpose(0, 2, 1)
    acc = exact_matmul(cols, weights)  # (G, N * out, M/G)
    acc = acc.reshape((group, n) + out + (m // group,))
    acc = acc.transpose((1, 0, rank + 2) + tuple(range(2, 2 + rank))).reshape((n, m) + out)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64).reshape((1, m) + (1,) * rank)
    return acc

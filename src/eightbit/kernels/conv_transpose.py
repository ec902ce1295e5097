"""Integer transposed convolution: every input position scatters (x - zp_x) * (w - zp_w) into the output."""

from __future__ import annotations

import itertools

import numpy as np

from eightbit.kernels.exact_sum import exact_matmul


def conv_transpose(x: np.ndarray, x_zero_point: int, w: np.ndarray, w_zero_point: np.ndarray,
                   bias: np.ndarray | None, strides: tuple[int, ...], pads: tuple[int, ...],
                   dilations: tuple[int, ...], output_padding: tuple[int, ...], group: int) -> np.ndarray:
    """acc[n, m, i*s + k*d - pad_begin] += (x[n, c, i] - zp_x) * (w[c, m, k] - zp_w[m]), plus bias[m].

    x: (N, C, *spatial) codes; w: (C, M/group, *kernel) codes; w_zero_point per output channel
    (shape (M,)) or scalar. Returns int64 accumulators (N, M, *out).
    """
    rank = w.ndim - 2
    kernel = w.shape[2:]
    n, channels = x.shape[:2]
    spatial = x.shape[2:]
    per_group_in, per_group_out = channels // group, w.shape[1]
    m = per_group_out * group
    zero = np.asarray(w_zero_point, dtype=np.int64).reshape(-1)
    zero = np.broadcast_to(zero, (m,)).reshape(group, 1, per_group_out, *(1,) * rank)
    weights = w.astype(np.int64).reshape((group, per_group_in, per_group_out) + kernel) - zero
    shifted = (x.astype(np.int64) - x_zero_point).reshape((n, group, per_group_in, -1))
    # (G, N * positions, C/G) @ (G, C/G, M/G * kernel)
    rows = shifted.transpose(1, 0, 3, 2).reshape(group, -1, per_group_in)
    products = exact_matmul(rows, weights.reshape(group, per_group_in, -1))
    products = products.reshape((group, n) + spatial + (per_group_out,) + kernel)
    full = tuple((size - 1) * s + (k - 1) * d + 1 + p
                 for size, s, k, d, p in zip(spatial, strides, kernel, dilations, output_padding))
    acc = np.zeros((group, n) + full + (per_group_out,), dtype=np.int64)
    for offsets in itertools.product(*(range(k) for k in kernel)):
        target = tuple(slice(o * d, o * d + (size - 1) * s + 1, s)
                       for o, d, size, s in zip(offsets, dilations, spatial, strides))
        acc[(slice(None), slice(None)) + target] += products[(Ellipsis,) + offsets]
    crop = tuple(slice(pads[i], full[i] - pads[rank + i]) for i in range(rank))
    acc = acc[(slice(None), slice(None)) + crop]
    acc = np.moveaxis(acc, -1, 2).transpose((1, 0) + tuple(range(2, 3 + rank)))
    acc = acc.reshape((n, m) + acc.shape[3:])
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64).reshape((1, m) + (1,) * rank)
    return acc

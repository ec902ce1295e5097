"""Sliding windows over the spatial axes of an NC... tensor (shared by convolution and pooling)."""

from __future__ import annotations

import math

import numpy as np


def explicit_pads(auto_pad: str, spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                  dilations: tuple[int, ...], pads: tuple[int, ...] | None) -> tuple[int, ...]:
    """ONNX pads [begin..., end...] for the given auto_pad mode."""
    rank = len(spatial)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            out = math.ceil(size / s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        return tuple(begin + end)
    if auto_pad == "VALID" or pads is None:
        return (0,) * (2 * rank)
    return tuple(pads)


def output_size(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int, ceil_mode: bool) -> int:
    span = size + begin + end - ((kernel - 1) * dilation + 1)
    count = (span + stride - 1) // stride if ceil_mode else span // stride
    if ceil_mode and count * stride >= size + begin:  # the last window must start inside the input or begin pad
        count -= 1
    return count + 1


def windows(x: np.ndarray, kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...],
            pads: tuple[int, ...], pad_value: int, ceil_mode: bool = False) -> np.ndarray:
    """View of shape (N, C, *out, *kernel): the input under each window position.

    Padding uses `pad_value` (the code of real zero for sums; the lowest code for max).
    """
    rank = len(kernel)
    spatial = x.shape[2:]
    outs = [output_size(spatial[i], kernel[i], strides[i], dilations[i], pads[i], pads[rank + i], ceil_mode)
            for i in range(rank)]
    # Pad the end far enough for ceil_mode windows that run past the explicit padding.
    extra = [max((outs[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
                 - (spatial[i] + pads[i] + pads[rank + i]), 0) for i in range(rank)]
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[rank + i] + extra[i]) for i in range(rank)]
    padded = np.pad(x, widths, constant_values=pad_value)
    spans = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    view = np.lib.stride_tricks.sliding_window_view(padded, spans, axis=tuple(range(2, 2 + rank)))
    index = (slice(None), slice(None))
    index += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(outs, strides))
    index += tuple(slice(None, None, d) for d in dilations)
    return view[index]

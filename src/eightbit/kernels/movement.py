"""Data-movement ops on codes: the output holds input codes, rearranged (ONNX semantics)."""

from __future__ import annotations

import numpy as np


def reshape(x: np.ndarray, shape: np.ndarray, allowzero: bool = False) -> np.ndarray:
    target = [int(d) for d in shape]
    if not allowzero:
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target)


def transpose(x: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    return np.transpose(x, perm)


def gather(x: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    """ONNX Gather: negative indices count from the end of `axis`."""
    return np.take(x, indices.astype(np.int64), axis=axis)


def flatten(x: np.ndarray, axis: int) -> np.ndarray:
    axis = axis % x.ndim if x.ndim else 0
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def squeeze(x: np.ndarray, axes: np.ndarray | None) -> np.ndarray:
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(int(a) % x.ndim for a in axes))


def unsqueeze(x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    rank = x.ndim + len(axes)
    for axis in sorted(int(a) % rank for a in axes):
        x = np.expand_dims(x, axis)
    return x


def slice_(x: np.ndarray, starts: np.ndarray, ends: np.ndarray, axes: np.ndarray | None,
           steps: np.ndarray | None) -> np.ndarray:
    index = [slice(None)] * x.ndim
    axes = range(len(starts)) if axes is None else [int(a) % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    for axis, start, end, step in zip(axes, starts, ends, steps):
        start, end, size = int(start), int(end), x.shape[axis]
        # Python slices clamp out-of-range bounds as ONNX does, except an end before the first
        # element with a negative step, which ONNX clamps to "past the beginning".
        index[axis] = slice(start, None if step < 0 and end < -size else end, step)
    return x[tuple(index)]


def pad(x: np.ndarray, pads: np.ndarray, mode: str, zero_point: int, axes: np.ndarray | None = None) -> np.ndarray:
    """Pad with the code of real zero (mode constant, value 0), or edge / reflect."""
    rank = x.ndim
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    count = len(axes)
    widths = [(0, 0)] * rank
    for i, axis in enumerate(axes):
        widths[axis] = (int(pads[i]), int(pads[count + i]))
    if any(b < 0 or e < 0 for b, e in widths):
        raise ValueError("negative Pad widths are not supported by the reference kernels")
    if mode == "constant":
        return np.pad(x, widths, constant_values=zero_point)
    return np.pad(x, widths, mode={"edge": "edge", "reflect": "reflect", "wrap": "wrap"}[mode])

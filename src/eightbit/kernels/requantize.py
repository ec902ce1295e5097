"""Requantization: int32 accumulators to output codes with fixed-point multipliers (eq. 9-11)."""

from __future__ import annotations

import dataclasses

import numpy as np

from eightbit.quant.requantize import apply_multiplier, quantize_multiplier


@dataclasses.dataclass(frozen=True)
class Requantization:
    """Integer parameters of q_out = clamp(M * acc + zero_point), M per tensor or per channel.

    `multiplier`, `right_shift` and `left_shift` are int64 arrays shaped to broadcast against
    the accumulator (per channel: a length along the channel axis, ones elsewhere).
    """

    multiplier: np.ndarray
    right_shift: np.ndarray
    left_shift: np.ndarray
    zero_point: int
    qmin: int
    qmax: int


def prepare_requantization(real: np.ndarray | float, zero_point: int, qmin: int, qmax: int,
                           channel_axis: int | None = None, ndim: int = 0) -> Requantization:
    """Offline: real multipliers (floats) -> Q0.31 multipliers and shifts (eq. 9)."""
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    fixed = [quantize_multiplier(float(r)) for r in real.reshape(-1)]
    shape: tuple[int, ...] = ()
    if channel_axis is not None and real.size > 1:
        shape = tuple(real.size if axis == channel_axis else 1 for axis in range(ndim))

    def field(name: str) -> np.ndarray:
        values = np.array([getattr(f, name) for f in fixed], dtype=np.int64)
        return values.reshape(shape) if shape else values.reshape(())

    return Requantization(field("multiplier"), field("right_shift"), field("left_shift"),
                          int(zero_point), int(qmin), int(qmax))


def requantize(acc: np.ndarray, params: Requantization) -> np.ndarray:
    """clamp(rounding_shift(high_mul(acc, m), shift) + zero_point, qmin, qmax) (eq. 10-11)."""
    scaled = apply_multiplier(acc, params.multiplier, params.right_shift, params.left_shift)
    return np.clip(scaled + params.zero_point, params.qmin, params.qmax)

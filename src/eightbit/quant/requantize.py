"""Requantization: int32 accumulator -> output integers (docs/quantization.md, section 3).

Two ways to apply the real multiplier M = s_in * s_w / s_out are named here:

* fixed point (eq. 9-11): M = m * 2^-(31 + right_shift), m an int32 in [2^30, 2^31);
  an integer multiply, a rounding doubling high half and a rounding right shift. This is
  gemmlowp's and TFLite's arithmetic, used by the reference kernels.
* float (eq. 12): round_half_to_even(acc * float32(M)). This is what ONNX Runtime's CPU
  kernels compute.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

_Q31 = 1 << 31


@dataclasses.dataclass(frozen=True)
class FixedPointMultiplier:
    """M ~= multiplier * 2^-(31 + right_shift), multiplier in [2^30, 2^31)."""

    multiplier: int
    right_shift: int

    def as_fraction(self) -> float:
        return self.multiplier / 2.0 ** (31 + self.right_shift)


def quantize_multiplier(real: float) -> FixedPointMultiplier:
    """Q0.31 multiplier and right shift for 0 < real < 1 (eq. 9)."""
    if not 0.0 < real < 1.0:
        raise ValueError(f"fixed-point requantization needs 0 < multiplier < 1, got {real!r}")
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    multiplier = round(mantissa * _Q31)
    if multiplier == _Q31:  # the mantissa rounded up to 1.0
        if exponent == 0:  # real is within 2^-32 of 1: the largest Q0.31 value is closest
            return FixedPointMultiplier(_Q31 - 1, 0)
        multiplier //= 2
        exponent += 1
    right_shift = -exponent
    if right_shift > 31:
        # Below 2^-32 the product rounds to zero for any int32 accumulator that fits.
        return FixedPointMultiplier(0, 0)
    return FixedPointMultiplier(int(multiplier), int(right_shift))


def _divide_truncating(x: np.ndarray, divisor: int) -> np.ndarray:
    """Integer division rounding toward zero, as C does."""
    return np.where(x >= 0, x // divisor, -((-x) // divisor))


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: int) -> np.ndarray:
    """round(a * b / 2^31), ties away from zero, for int32 a and b (eq. 10)."""
    product = np.asarray(a, dtype=np.int64) * np.int64(b)
    nudge = np.where(product >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    result = _divide_truncating(product + nudge, _Q31)
    overflow = (np.asarray(a) == -_Q31) & (b == -_Q31)
    return np.where(overflow, np.int64(_Q31 - 1), result)


def rounding_right_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """round(x / 2^shift), ties away from zero (eq. 11)."""
    x = np.asarray(x, dtype=np.int64)
    if shift == 0:
        return x
    mask = np.int64((1 << shift) - 1)
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> shift) + (remainder > threshold).astype(np.int64)


def requantize_fixed_point(
    acc: np.ndarray, multiplier: FixedPointMultiplier, zero_point: int, qmin: int, qmax: int
) -> np.ndarray:
    """Integers only: clamp(rounding_shift(high_mul(acc, m), shift) + zero_point) (eq. 10-11)."""
    scaled = rounding_right_shift(
        saturating_rounding_doubling_high_mul(acc, multiplier.multiplier), multiplier.right_shift
    )
    return np.clip(scaled + zero_point, qmin, qmax)


def requantize_float(acc: np.ndarray, real: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """ONNX Runtime's way: clamp(round_half_even(acc * float32(M)) + zero_point) (eq. 12)."""
    scaled = np.rint(np.asarray(acc, dtype=np.float32) * np.float32(real))
    return np.clip(scaled.astype(np.int64) + zero_point, qmin, qmax)

"""Requantization: int32 accumulator -> output integers (docs/quantization.md, section 3).

Two ways to apply the real multiplier M = s_in * s_w / s_out are named here:

* fixed point (eq. 9-11): M = m * 2^-(31 + right_shift), m an int32 in [2^30, 2^31);
  one 64-bit integer product and one rounding right shift (TFLite's single-rounding
  variant), used by the reference kernels.
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
    """M ~= multiplier * 2^(left_shift - 31 - right_shift), multiplier in [2^30, 2^31) (eq. 9).

    At most one of the shifts is nonzero: `left_shift` only for M >= 1.
    """

    multiplier: int
    right_shift: int
    left_shift: int = 0

    def as_fraction(self) -> float:
        return self.multiplier * 2.0 ** (self.left_shift - 31 - self.right_shift)


def quantize_multiplier(real: float) -> FixedPointMultiplier:
    """Q0.31 multiplier and shift for a real multiplier 0 < real < 2^31 (eq. 9)."""
    if not 0.0 < real < 2.0**31:
        raise ValueError(f"fixed-point requantization needs 0 < multiplier < 2^31, got {real!r}")
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    multiplier = round(mantissa * _Q31)
    if multiplier == _Q31:  # the mantissa rounded up to 1.0
        if exponent == 0:  # real is within 2^-32 of 1: the largest Q0.31 value is closest
            return FixedPointMultiplier(_Q31 - 1, 0)
        multiplier //= 2
        exponent += 1
    if exponent > 0:
        return FixedPointMultiplier(int(multiplier), 0, int(exponent))
    right_shift = -exponent
    if right_shift > 31:
        # Below 2^-32 the product rounds to zero for any int32 accumulator that fits.
        return FixedPointMultiplier(0, 0)
    return FixedPointMultiplier(int(multiplier), int(right_shift))


def rounding_right_shift(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """round(x / 2^shift), ties away from zero (eq. 11); shift >= 0, may be per channel."""
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    mask = np.left_shift(np.int64(1), shift) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> shift) + (remainder > threshold).astype(np.int64)


def saturate_int32(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -_Q31, _Q31 - 1)


def apply_multiplier(acc: np.ndarray, multiplier: np.ndarray | int, right_shift: np.ndarray | int,
                     left_shift: np.ndarray | int = 0) -> np.ndarray:
    """Integers only: round(acc * 2^left_shift * multiplier / 2^(31 + right_shift)) (eq. 10-11).

    One 32 x 32 -> 64-bit product and one rounding shift: |acc| < 2^31 and multiplier < 2^31
    keep the product below 2^62. The parameters broadcast against `acc`, so per-channel
    multipliers come shaped along the channel axis. The left-shifted accumulator saturates to
    int32 as it would in hardware.
    """
    shifted = saturate_int32(np.left_shift(np.asarray(acc, dtype=np.int64), np.asarray(left_shift, dtype=np.int64)))
    product = shifted * np.asarray(multiplier, dtype=np.int64)
    return rounding_right_shift(product, 31 + np.asarray(right_shift, dtype=np.int64))


def requantize_fixed_point(
    acc: np.ndarray, multiplier: FixedPointMultiplier, zero_point: int, qmin: int, qmax: int
) -> np.ndarray:
    """Integers only: clamp(round(acc * m / 2^(31 + shift)) + zero_point) (eq. 10-11)."""
    scaled = apply_multiplier(acc, multiplier.multiplier, multiplier.right_shift, multiplier.left_shift)
    return np.clip(scaled + zero_point, qmin, qmax)


def requantize_float(acc: np.ndarray, real: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """ONNX Runtime's way: clamp(round_half_even(acc * float32(M)) + zero_point) (eq. 12)."""
    scaled = np.rint(np.asarray(acc, dtype=np.float32) * np.float32(real))
    return np.clip(scaled.astype(np.int64) + zero_point, qmin, qmax)

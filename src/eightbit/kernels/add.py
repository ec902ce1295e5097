"""Integer addition of two tensors with different scales (TFLite's scheme)."""

from __future__ import annotations

import dataclasses

import numpy as np

from eightbit.kernels.requantize import Requantization, prepare_requantization, requantize
from eightbit.quant.requantize import apply_multiplier

# Inputs are moved this many bits up before rescaling, so the rescaled terms keep 20 fraction
# bits; with 9-bit operands the sum stays far inside int32.
LEFT_SHIFT = 20


@dataclasses.dataclass(frozen=True)
class AddParams:
    a_zero_point: int
    b_zero_point: int
    a_rescale: Requantization  # s_a / (2 max(s_a, s_b)), no zero point
    b_rescale: Requantization
    output: Requantization  # 2 max(s_a, s_b) / (2^LEFT_SHIFT s_out)


def prepare_add(a_scale: float, a_zero_point: int, b_scale: float, b_zero_point: int,
                out_scale: float, out_zero_point: int, qmin: int, qmax: int) -> AddParams:
    """Offline: the three real multipliers of the sum, as fixed-point multipliers."""
    twice_max = 2.0 * max(a_scale, b_scale)
    wide = -(2**62), 2**62
    return AddParams(
        int(a_zero_point), int(b_zero_point),
        prepare_requantization(a_scale / twice_max, 0, *wide),
        prepare_requantization(b_scale / twice_max, 0, *wide),
        prepare_requantization(twice_max / (2**LEFT_SHIFT * out_scale), out_zero_point, qmin, qmax),
    )


def _rescaled(q: np.ndarray, zero_point: int, params: Requantization) -> np.ndarray:
    shifted = (q.astype(np.int64) - zero_point) << LEFT_SHIFT
    return apply_multiplier(shifted, params.multiplier, params.right_shift, params.left_shift)


def add(a: np.ndarray, b: np.ndarray, params: AddParams) -> np.ndarray:
    """q_out = clamp(M_out * (M_a (a - zp_a) 2^20 + M_b (b - zp_b) 2^20) + zp_out), numpy broadcasting."""
    total = _rescaled(a, params.a_zero_point, params.a_rescale) + _rescaled(b, params.b_zero_point, params.b_rescale)
    return requantize(total, params.output)

"""Input ranges beyond which a saturating activation's output code stops changing (docs/quantization.md, eq. 8a).

Sigmoid, HardSigmoid and HardSwish flatten out. Once their output is quantized, every input
past some bound produces the same output code, so the input's quantization grid need not
cover those inputs: clipping them there costs nothing at the output and frees codes for
the inputs that matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from eightbit.config import IntegerFormat

SATURATING_ACTIVATIONS = ("Sigmoid", "HardSigmoid", "HardSwish")


def saturating_activation(op_type: str, alpha: float = 0.2, beta: float = 0.5, slope: float | np.ndarray = 1 / 6
                          ) -> Callable[[np.ndarray], np.ndarray] | None:
    """The ONNX formula of a saturating activation, in float32 (alpha, beta: HardSigmoid's; slope: a
    hard-swish gate's, one or one per channel shaped to broadcast against x, eq. 35b)."""
    one, zero = np.float32(1), np.float32(0)
    if op_type == "Sigmoid":
        def sigmoid(x: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore"):  # exp overflows to inf for x < -88: the result is 0, as it should be
                return (one / (one + np.exp(-np.asarray(x, np.float32)))).astype(np.float32)
        return sigmoid
    if op_type == "HardSigmoid":
        a, b = np.float32(alpha), np.float32(beta)
        return lambda x: np.clip(a * np.asarray(x, np.float32) + b, zero, one)
    if op_type == "HardSwish":
        k = np.asarray(slope, np.float32)
        half = np.float32(0.5)
        return lambda x: np.asarray(x, np.float32) * np.clip(k * np.asarray(x, np.float32) + half, zero, one)
    return None


def _output_thresholds(scale: float, zero_point: int, fmt: IntegerFormat) -> tuple[float, float]:
    """Real outputs below the first / above the second round to qmin / qmax (eq. 8a)."""
    return (fmt.qmin - zero_point + 0.5) * scale, (fmt.qmax - zero_point - 0.5) * scale


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def sigmoid_live_range(scale: float, zero_point: int, fmt: IntegerFormat) -> tuple[float, float]:
    low, high = _output_thresholds(scale, zero_point, fmt)
    return (_logit(low) if 0.0 < low < 1.0 else -math.inf, _logit(high) if 0.0 < high < 1.0 else math.inf)


def hard_sigmoid_live_range(
    scale: float, zero_point: int, fmt: IntegerFormat, alpha: float, beta: float
) -> tuple[float, float]:
    """y = clamp(alpha * x + beta, 0, 1), alpha > 0: constant below (0 - beta) / alpha and above (1 - beta) / alpha."""
    low, high = _output_thresholds(scale, zero_point, fmt)
    return (max(low, 0.0) - beta) / alpha, (min(high, 1.0) - beta) / alpha


def hard_swish_live_range(
    scale: float, zero_point: int, fmt: IntegerFormat, slope: float = 1 / 6
) -> tuple[float, float]:
    """y = x * clamp(slope * x + 1/2, 0, 1) (hard-swish: slope 1/6; a channel equalized by f, eq. 35b:
    slope 1/(6 f)): exactly 0 for x <= -1/(2 slope); increasing for x >= -1/(4 slope). Given the smallest
    slope of a tensor's channels, the range holds for every channel."""
    cutoff = 0.5 / slope
    _, high = _output_thresholds(scale, zero_point, fmt)
    if high <= 0.0:
        return -cutoff, math.inf
    # Solve x (slope x + 1/2) = high on the rising branch, or x = high once the gate is 1 (x >= cutoff).
    upper = high if high >= cutoff else (-0.5 + math.sqrt(0.25 + 4.0 * slope * high)) / (2.0 * slope)
    return -cutoff, upper

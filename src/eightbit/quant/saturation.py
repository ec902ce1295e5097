"""Input ranges beyond which a saturating activation's output code stops changing (docs/quantization.md, eq. 8a).

Sigmoid, HardSigmoid and HardSwish flatten out. Once their output is quantized, every input
past some bound produces the same output code, so the input's quantization grid need not
cover those inputs: clipping them there costs nothing at the output and frees codes for
the inputs that matter.
"""

from __future__ import annotations

import math

from eightbit.config import IntegerFormat


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


def hard_swish_live_range(scale: float, zero_point: int, fmt: IntegerFormat) -> tuple[float, float]:
    """y = x * clamp(x / 6 + 1/2, 0, 1): exactly 0 for x <= -3; increasing for x >= -3/2."""
    _, high = _output_thresholds(scale, zero_point, fmt)
    if high <= 0.0:
        return -3.0, math.inf
    # Solve x (x + 3) / 6 = high on the rising branch, or x = high once x >= 3.
    upper = high if high >= 3.0 else (-3.0 + math.sqrt(9.0 + 24.0 * high)) / 2.0
    return -3.0, upper

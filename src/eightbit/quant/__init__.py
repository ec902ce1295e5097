"""Pure numpy quantization math: no graphs, no I/O. Each function cites docs/quantization.md."""

from eightbit.quant.affine import choose_qparams, dequantize, quantize, quantize_bias
from eightbit.quant.requantize import (
    FixedPointMultiplier,
    quantize_multiplier,
    requantize_fixed_point,
    requantize_float,
)

__all__ = [
    "FixedPointMultiplier",
    "choose_qparams",
    "dequantize",
    "quantize",
    "quantize_bias",
    "quantize_multiplier",
    "requantize_fixed_point",
    "requantize_float",
]

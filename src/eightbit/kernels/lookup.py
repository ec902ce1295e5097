"""Any elementwise function of one 8-bit tensor: a table of 256 output codes built offline."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from eightbit.config import IntegerFormat
from eightbit.quant import dequantize, quantize


def prepare_table(function: Callable[[np.ndarray], np.ndarray], in_scale: float, in_zero_point: int,
                  in_format: IntegerFormat, out_scale: float, out_zero_point: int,
                  out_format: IntegerFormat) -> np.ndarray:
    """Offline: table[q - qmin] = quantize(function(dequantize(q))) for every input code q.

    Dequantize, the function and quantize are computed in float32 as the ONNX ops define them
    (eq. 1, 5), so the table holds exactly the codes a float evaluation of DQ -> op -> Q gives.
    """
    codes = np.arange(in_format.qmin, in_format.qmax + 1).astype(in_format.numpy_dtype)
    real = dequantize(codes, np.float32(in_scale), in_zero_point)
    result = np.asarray(function(real), dtype=np.float32)
    return quantize(result, np.float32(out_scale), out_zero_point, out_format).astype(np.int64)


def lookup(q: np.ndarray, table: np.ndarray, qmin: int) -> np.ndarray:
    """q_out = table[q - qmin]."""
    return table[q.astype(np.int64) - qmin]

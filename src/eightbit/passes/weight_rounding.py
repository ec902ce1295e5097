"""Weight codes of one node chosen from its inputs' second moments (eq. 34), in the weight's own layout."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from eightbit.config import IntegerFormat
from eightbit.passes.qdq_nodes import dequantized_codes
from eightbit.plan.ops import weight_axis
from eightbit.quant.rounding import error_feedback_codes
from eightbit.quant.weights import weight_qparams


def rounded_codes(
    node: ir.Node, array: np.ndarray, moments: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
    fmt: IntegerFormat, input_scale: float = 0.0,
) -> np.ndarray:
    """Codes of `node`'s weight `array` on the grid (scale, zero point) (per channel along the node's
    output-channel axis, or one for the tensor) chosen by eq. 34 with H = `moments` (groups, columns,
    columns) from calibrate.moments; given H's diagonal blocks only (groups, blocks, B, B), each block of
    columns is rounded on its own."""
    output_axis = weight_axis(node)
    rows = np.moveaxis(np.asarray(array, np.float64), output_axis, 0)
    layout = rows.shape
    rows = rows.reshape(layout[0], -1)
    scales = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (layout[0],))
    zero_points = np.broadcast_to(np.asarray(zero_point, np.float64).reshape(-1), (layout[0],))
    groups = moments.shape[0]
    per_group = layout[0] // groups
    codes = np.empty_like(rows)
    for group in range(groups):
        part = slice(group * per_group, (group + 1) * per_group)
        blocks = moments[group] if moments.ndim == 4 else moments[group][None]
        width = blocks.shape[-1]
        for block, h in enumerate(blocks):
            columns = slice(block * width, (block + 1) * width)
            used = rows[part, columns].shape[1]
            codes[part, columns] = error_feedback_codes(rows[part, columns], h[:used, :used], scales[part],
                                                        zero_points[part], fmt, input_noise=input_scale**2 / 12)
    return np.moveaxis(codes.reshape(layout), 0, output_axis).astype(fmt.numpy_dtype)


def rounded_constant(
    graph: ir.Graph, node: ir.Node, value: ir.Value, array: np.ndarray, moments: np.ndarray, fmt: IntegerFormat,
    axis: int | None, taken: set[str], input_scale: float = 0.0, least_scale: np.ndarray | None = None,
) -> tuple[ir.Value, np.ndarray]:
    """Integer initializer + DequantizeLinear standing in for `node`'s weight `value`, on the grid eq. 6
    gives (per channel along `axis`, or per tensor; no scale below `least_scale`, eq. 7a), codes chosen
    by eq. 34. Returns (value, scale)."""
    scale, zero_point = weight_qparams(array, fmt, axis, least_scale)
    codes = rounded_codes(node, array, moments, scale, zero_point, fmt, input_scale)
    return dequantized_codes(graph, value, codes, scale, zero_point, axis, node, taken), scale

"""Weight codes of one node chosen from its inputs' second moments (eq. 34), in the weight's own layout."""

from __future__ import annotations

import hashlib

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
    output-channel axis, one for the tensor, or one per weight as (outputs, inputs)) chosen by eq. 34 with
    H = `moments` (groups, columns, columns) from calibrate.moments; given H's diagonal blocks only (groups,
    blocks, B, B), each block of columns is rounded on its own."""
    output_axis = weight_axis(node)
    rows = np.moveaxis(np.asarray(array, np.float64), output_axis, 0)
    layout = rows.shape
    rows = rows.reshape(layout[0], -1)
    scales = _per_row(scale, rows.shape)
    zero_points = _per_row(zero_point, rows.shape)
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
            codes[part, columns] = error_feedback_codes(rows[part, columns], h[:used, :used], scales[part, columns],
                                                        zero_points[part, columns], fmt,
                                                        input_noise=input_scale**2 / 12)
    return np.moveaxis(codes.reshape(layout), 0, output_axis).astype(fmt.numpy_dtype)


def _per_row(parameter: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A grid parameter per tensor, per output row or per weight, as one per weight of rows of `shape`."""
    parameter = np.asarray(parameter, np.float64)
    return np.broadcast_to(parameter if parameter.ndim == 2 else parameter.reshape(-1, 1), shape)


def rounded_constant(
    graph: ir.Graph, node: ir.Node, value: ir.Value, array: np.ndarray, moments: np.ndarray, fmt: IntegerFormat,
    axis: int | None, taken: set[str], input_scale: float = 0.0, least_scale: np.ndarray | None = None,
    known: dict[tuple, np.ndarray] | None = None,
) -> tuple[ir.Value, np.ndarray]:
    """Integer initializer + DequantizeLinear standing in for `node`'s weight `value`, on the grid eq. 6
    gives (per channel along `axis`, or per tensor; no scale below `least_scale`, eq. 7a), codes chosen
    by eq. 34 (or taken from `known`, where the same weight, grid and input scale were rounded on the same
    H before; new codes are added to it). Returns (value, scale)."""
    scale, zero_point = weight_qparams(array, fmt, axis, least_scale)
    key = _codes_key(node, array, scale, zero_point, fmt, input_scale)
    codes = known.get(key) if known is not None else None
    if codes is None:
        codes = rounded_codes(node, array, moments, scale, zero_point, fmt, input_scale)
        if known is not None:
            known[key] = codes
    return dequantized_codes(graph, value, codes, scale, zero_point, axis, node, taken), scale


def _codes_key(node: ir.Node, array: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, fmt: IntegerFormat,
               input_scale: float) -> tuple:
    """Everything eq. 34's codes of `node` depend on besides its H: its weight and grid, and its input's scale."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (array, scale, zero_point):
        part = np.ascontiguousarray(part)
        digest.update(str((part.dtype, part.shape)).encode())
        digest.update(part.tobytes())
    return node.name, weight_axis(node), fmt, float(input_scale), digest.digest()

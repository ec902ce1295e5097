"""The graph forms of a weight quantized in blocks (docs/quantization.md, section 2b).

RUNTIME: ONNX Runtime's own operators, which read the packed codes directly: `com.microsoft.MatMulNBits`
for MatMul and Gemm (the codes never become a float matrix) and `com.microsoft.GatherBlockQuantized` for
embedding tables. STANDARD: an ONNX `DequantizeLinear` with `block_size` (opset 21) and INT4/UINT4 (or
8-bit) codes before the unchanged node, which any opset-21 runtime reads.
"""

from __future__ import annotations

import dataclasses
import enum

import ml_dtypes
import numpy as np
import onnx_ir as ir

from eightbit.ir.graph import add_initializer, attribute, unique_name
from eightbit.quant.blocks import BlockFormat, BlockGrid, as_unsigned, packed

MICROSOFT = "com.microsoft"
# MatMulNBits' accuracy level: 4 quantizes its input to int8 per block at run time and sums int8 products in
# int32, the runtime's fast path (at level 0, float arithmetic, the digits transformer with 8-bit blocks ran
# at 0.33x the float model's speed, against 0.88x at level 4). ONNX Runtime fuses the standard form into the
# same operator at the same level.
ACCURACY_LEVEL = 4
# The first opset whose DequantizeLinear takes block_size and 4-bit types.
BLOCK_OPSET = 21


class BlockForm(enum.Enum):
    """How block codes are written: the runtime's fused operators, or standard DequantizeLinear."""

    RUNTIME = "runtime"
    STANDARD = "standard"


@dataclasses.dataclass(frozen=True)
class BlockWeight:
    """One weight in blocks: `codes` (rows = outputs, or table rows for Gather; columns = inputs) in the
    format's type, on `grid`."""

    codes: np.ndarray
    grid: BlockGrid
    block: BlockFormat


def _add(graph: ir.Graph, base: str, suffix: str, array: np.ndarray, taken: set[str]) -> ir.Value:
    return add_initializer(graph, unique_name(graph, f"{base}_{suffix}", taken), array)


def _packed_rows(weight: BlockWeight) -> np.ndarray:
    """Codes as unsigned, packed per block: (rows, blocks, block bytes), the last block padded with zeros."""
    codes = as_unsigned(weight.codes, weight.block.fmt)
    missing = -codes.shape[1] % weight.block.size
    if weight.block.fmt.signed:  # padding holds the code of 0 (the zero point)
        codes = np.pad(codes, ((0, 0), (0, missing)), constant_values=2 ** (weight.block.bits - 1))
    else:
        codes = np.pad(codes, ((0, 0), (0, missing)))
    rows = codes.shape[0]
    return packed(codes.reshape(rows, -1, weight.block.size), weight.block.bits)


def _packed_zero_points(weight: BlockWeight) -> np.ndarray | None:
    """Zero points as the runtime's operators read them (unsigned, packed along each row); None where the
    format is symmetric (their default, 2^(bits-1), is then the zero point)."""
    if weight.block.symmetric:
        return None
    return packed(as_unsigned(weight.grid.zero_point, weight.block.fmt), weight.block.bits)


def runtime_matmul(graph: ir.Graph, node: ir.Node, weight: BlockWeight, bias: ir.Value | None,
                   taken: set[str]) -> ir.Node:
    """MatMulNBits computing `node` (a MatMul, or a Gemm without transA, alpha or beta) with `bias` added."""
    base = node.inputs[1].name
    rows, columns = weight.codes.shape
    inputs = [node.inputs[0], _add(graph, base, "blocks", _packed_rows(weight), taken),
              _add(graph, base, "scales", weight.grid.scale.reshape(-1), taken)]
    zero_points = _packed_zero_points(weight)
    inputs.append(None if zero_points is None else _add(graph, base, "zero_points", zero_points.reshape(-1), taken))
    if bias is not None:
        inputs += [None, bias]
    while inputs[-1] is None:
        inputs.pop()
    attributes = {"K": columns, "N": rows, "bits": weight.block.bits, "block_size": weight.block.size,
                  "accuracy_level": ACCURACY_LEVEL}
    return ir.node("MatMulNBits", inputs, attributes, domain=MICROSOFT, name=node.name)


def runtime_gather(graph: ir.Graph, node: ir.Node, weight: BlockWeight, taken: set[str]) -> ir.Node:
    """GatherBlockQuantized taking rows of the table `node` (a Gather on axis 0) reads."""
    base = node.inputs[0].name
    rows = weight.codes.shape[0]
    inputs = [_add(graph, base, "blocks", _packed_rows(weight).reshape(rows, -1), taken), node.inputs[1],
              _add(graph, base, "scales", weight.grid.scale, taken)]
    zero_points = _packed_zero_points(weight)
    if zero_points is not None:
        inputs.append(_add(graph, base, "zero_points", zero_points, taken))
    attributes = {"gather_axis": 0, "quantize_axis": 1, "block_size": weight.block.size, "bits": weight.block.bits}
    return ir.node("GatherBlockQuantized", inputs, attributes, domain=MICROSOFT, name=node.name)


def _typed(codes: np.ndarray, block: BlockFormat) -> np.ndarray:
    """Codes in the ONNX type of their width: INT4/UINT4 (ml_dtypes) at 4 bits, int8/uint8 at 8."""
    if block.bits == 8:
        return codes
    return codes.astype(ml_dtypes.int4 if block.fmt.signed else ml_dtypes.uint4)


def standard_dequantize(graph: ir.Graph, value: ir.Value, weight: BlockWeight, axis: int, before: ir.Node,
                        taken: set[str]) -> ir.Value:
    """DequantizeLinear with block_size standing in for the constant `value`, inserted before `before`.

    The codes keep the weight's layout: `axis` is the inputs' axis (the blocks run along it), and the
    weight's rows are its other axis."""
    base = value.name
    codes, scale, zero_point = weight.codes, weight.grid.scale, weight.grid.zero_point
    if axis == 0:
        codes, scale, zero_point = codes.T, scale.T, zero_point.T
    inputs = [_add(graph, base, "quantized", _typed(codes, weight.block), taken),
              _add(graph, base, "scale", scale, taken)]
    if not weight.block.symmetric:
        inputs.append(_add(graph, base, "zero_point", _typed(zero_point, weight.block), taken))
    output = ir.Value(name=unique_name(graph, f"{base}_dequantized", taken), type=ir.TensorType(ir.DataType.FLOAT),
                      shape=value.shape)
    node = ir.node("DequantizeLinear", inputs, {"axis": axis, "block_size": weight.block.size}, outputs=[output],
                   name=unique_name(graph, f"{base}_DequantizeLinear", taken))
    graph.insert_before(before, node)
    return output


def gemm_fits_runtime(node: ir.Node, outputs: int) -> bool:
    """Whether a Gemm is a MatMul plus a bias: no transA, alpha 1, and no C or a 1-D C of the outputs' length
    with beta 1 (MatMulNBits computes A·Bᵀ + bias)."""
    if attribute(node, "transA", 0) or attribute(node, "alpha", 1.0) != 1.0:
        return False
    if len(node.inputs) < 3 or node.inputs[2] is None:
        return True
    shape = node.inputs[2].shape
    return attribute(node, "beta", 1.0) == 1.0 and shape is not None and shape.rank() == 1 \
        and shape[0] == outputs

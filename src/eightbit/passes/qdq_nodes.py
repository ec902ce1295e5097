"""Creating and reading QuantizeLinear / DequantizeLinear nodes and their constants."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from eightbit.config import IntegerFormat
from eightbit.ir.graph import add_initializer, unique_name
from eightbit.quant import quantize
from eightbit.quant.weights import weight_qparams


def _parameters(
    graph: ir.Graph, base: str, scale: np.ndarray, zero_point: np.ndarray, taken: set[str]
) -> tuple[ir.Value, ir.Value]:
    scale_value = add_initializer(graph, unique_name(graph, f"{base}_scale", taken), np.asarray(scale, np.float32))
    zero_value = add_initializer(graph, unique_name(graph, f"{base}_zero_point", taken), np.asarray(zero_point))
    return scale_value, zero_value


def _dequantize_node(
    graph: ir.Graph, base: str, quantized: ir.Value, scale: ir.Value, zero: ir.Value | None, axis: int | None,
    like: ir.Value, taken: set[str],
) -> ir.Node:
    attributes = {"axis": axis} if axis is not None else None
    output = ir.Value(name=unique_name(graph, f"{base}_dequantized", taken), type=ir.TensorType(ir.DataType.FLOAT),
                      shape=like.shape)
    inputs = [quantized, scale] if zero is None else [quantized, scale, zero]
    return ir.node("DequantizeLinear", inputs, attributes, outputs=[output],
                   name=unique_name(graph, f"{base}_DequantizeLinear", taken))


def dequantized_constant(
    graph: ir.Graph, value: ir.Value, array: np.ndarray, fmt: IntegerFormat, axis: int | None,
    before: ir.Node, taken: set[str], qparams: tuple[np.ndarray, np.ndarray] | None = None,
    least_scale: np.ndarray | None = None,
) -> tuple[ir.Value, np.ndarray]:
    """An integer initializer + DequantizeLinear standing in for constant `value`.

    Parameters come from the array's own range (per channel along `axis`, or per tensor; no scale
    below `least_scale`) unless given. The node is inserted before `before`. Returns (dequantized
    value, scale).
    """
    scale, zero_point = qparams if qparams is not None else weight_qparams(array, fmt, axis, least_scale)
    codes = quantize(array, scale, zero_point, fmt, axis)
    return dequantized_codes(graph, value, codes, scale, zero_point, axis, before, taken), scale


def dequantized_codes(
    graph: ir.Graph, value: ir.Value, codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
    axis: int | None, before: ir.Node, taken: set[str],
) -> ir.Value:
    """Integer initializer `codes` + DequantizeLinear, inserted before `before`, standing in for `value`.

    An int32 bias's zero point, 0 everywhere, is left out (DequantizeLinear's default is 0 of the
    codes' type): per channel it would cost four bytes of file per channel. Weights keep theirs:
    ONNX Runtime fuses a Gemm only when its weight's DequantizeLinear has one.
    """
    base = value.name
    quantized = add_initializer(graph, unique_name(graph, f"{base}_quantized", taken), codes)
    if codes.dtype != np.int32 or np.any(zero_point):
        scale_value, zero_value = _parameters(graph, base, scale, zero_point, taken)
    else:
        scale_value = add_initializer(graph, unique_name(graph, f"{base}_scale", taken), np.asarray(scale, np.float32))
        zero_value = None
    node = _dequantize_node(graph, base, quantized, scale_value, zero_value, axis, value, taken)
    graph.insert_before(before, node)
    return node.outputs[0]


def quantize_dequantize(
    graph: ir.Graph, value: ir.Value, scale: np.ndarray, zero_point: np.ndarray, taken: set[str]
) -> ir.Value:
    """QuantizeLinear -> DequantizeLinear on activation `value`, placed right after its producer.

    Returns the dequantized value; rewiring the readers is the caller's choice.
    """
    base = value.name
    scale_value, zero_value = _parameters(graph, base, scale, zero_point, taken)
    quantized = ir.Value(name=unique_name(graph, f"{base}_quantized", taken),
                         type=ir.TensorType(ir.DataType.from_numpy(np.asarray(zero_point).dtype)), shape=value.shape)
    q_node = ir.node("QuantizeLinear", [value, scale_value, zero_value], outputs=[quantized],
                     name=unique_name(graph, f"{base}_QuantizeLinear", taken))
    dq_node = _dequantize_node(graph, base, quantized, scale_value, zero_value, None, value, taken)
    producer = value.producer()
    if producer is not None:
        graph.insert_after(producer, [q_node, dq_node])
    else:
        graph.insert_before(next(iter(graph)), [q_node, dq_node])
    return dq_node.outputs[0]



"""Half-precision models (float16, bfloat16) quantized as float32 ones, their inputs and outputs keeping their
types (docs/quantization.md, section 5).

The Q/DQ operators dequantize to the scale's type, and ONNX Runtime's integer kernels read and write float32
around them; it has few bfloat16 kernels on CPU at all. So the converter works on a float32 model: every half
tensor, value and type attribute becomes float32, which is exact (every half value is a float32 value). The
model written then reads and writes the half types through one Cast at each such input and output.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from eightbit.ir.graph import graph_values, unique_name

HALF = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def _float32_tensor(tensor: ir.TensorProtocol) -> ir.TensorProtocol:
    return ir.tensor(np.asarray(tensor.numpy(), np.float32), name=tensor.name)


def _float32_attributes(node: ir.Node) -> None:
    """A node's half type attributes (Cast's `to`, a generator's `dtype`) and half tensor attributes, float32."""
    for name, attr in list(node.attributes.items()):
        if attr.type is ir.AttributeType.INT and name in ("to", "dtype") and attr.value in HALF:
            node.attributes[name] = ir.AttrInt64(name, ir.DataType.FLOAT)
        elif attr.type is ir.AttributeType.TENSOR and attr.value.dtype in HALF:
            node.attributes[name] = ir.AttrTensor(name, _float32_tensor(attr.value))


def as_float32(model: ir.Model) -> dict[str, ir.DataType]:
    """Rewrite `model` in float32 where it is in a half type; returns its graph inputs and outputs that were,
    name -> their type (for with_types)."""
    graph = model.graph
    io_types = {value.name: value.dtype for value in [*graph.inputs, *graph.outputs] if value.dtype in HALF}
    for value in graph_values(graph):
        if value.dtype in HALF:
            value.type = ir.TensorType(ir.DataType.FLOAT)
        if value.const_value is not None and value.const_value.dtype in HALF:
            value.const_value = _float32_tensor(value.const_value)
    for node in ir.traversal.RecursiveGraphIterator(graph):
        _float32_attributes(node)
        for output in node.outputs:
            if output.dtype in HALF:
                output.type = ir.TensorType(ir.DataType.FLOAT)
    return io_types


def _cast(value: ir.Value, to: ir.DataType) -> ir.Node:
    node = ir.Node("", "Cast", [value], [ir.AttrInt64("to", to)], num_outputs=1)
    node.outputs[0].type, node.outputs[0].shape = ir.TensorType(to), value.shape
    return node


def with_types(model: ir.Model, io_types: dict[str, ir.DataType]) -> None:
    """Give `model`'s inputs and outputs named in `io_types` those types again, through a Cast at each: an input
    is read in its type and cast to float32, an output computed in float32 and cast to its type. The names stay
    the model's; the float32 tensors take new ones."""
    graph, taken = model.graph, set()
    for index, value in enumerate(list(graph.inputs)):
        if value.name not in io_types:
            continue
        name = value.name
        typed = ir.Value(name=None, type=ir.TensorType(io_types[name]), shape=value.shape)
        cast = _cast(typed, ir.DataType.FLOAT)
        value.replace_all_uses_with(cast.outputs[0], replace_graph_outputs=True)
        graph.inputs[index] = typed
        value.name = None
        typed.name, cast.outputs[0].name = name, unique_name(graph, f"{name}_float32", taken)
        graph.insert_before(next(iter(graph)), cast)
    for index, value in enumerate(list(graph.outputs)):
        if value.name not in io_types or value.dtype in HALF:
            continue
        name = value.name
        cast = _cast(value, io_types[name])
        value.name = unique_name(graph, f"{name}_float32", taken)
        cast.outputs[0].name = name
        graph.append(cast)
        graph.outputs[index] = cast.outputs[0]

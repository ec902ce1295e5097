"""Constant per-channel Mul and Add before a convolution folded into its weights and bias.

Conv(x · c) is the convolution with each input channel's weights times c_i; Conv(x + b), where
the convolution pads nothing, adds Σ W·b to each output's bias. PP-LCNet writes a learned
scale and shift after every hard-swish this way: folded, the convolution reads the hard-swish's
grid directly, and the two integer ops with their roundings (the shift's moves every code by a
fraction of a step) are gone.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from eightbit.ir.graph import (
    add_initializer,
    attribute,
    constant_array,
    constant_operand,
    replace_output,
    rewrite_until_unchanged,
    single_consumer,
    unique_name,
)
from eightbit.passes.output_channels import channel_vector, float_weight, set_constant
from eightbit.passes.read_qdq import GIVEN_GRID


def _conv_weight(node: ir.Node) -> np.ndarray | None:
    weight = float_weight(node) if node.op_type == "Conv" else None
    return weight if weight is not None and weight.ndim >= 3 else None


def _pads_nothing(node: ir.Node) -> bool:
    if attribute(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return False
    return not any(attribute(node, "pads", []) or [])


def _data_and_constant(node: ir.Node) -> tuple[ir.Value, np.ndarray] | None:
    found = constant_operand(node) if node.domain in ("", "ai.onnx") else None
    return None if found is None else (node.inputs[1 - found[0]], found[1])


def _broadcastable(vector: np.ndarray, rank: int) -> np.ndarray:
    """One value per channel shaped to broadcast along axis 1 of a rank-`rank` tensor; one value if all agree."""
    if np.all(vector == vector[0]):
        return vector[:1].copy()
    return vector.reshape((1, -1) + (1,) * (rank - 2))


def _per_weight(weight: np.ndarray, group: int, vector: np.ndarray) -> np.ndarray:
    """`vector` (one value per input channel of the convolution) laid out like `weight`'s
    (output channel, input channel within the group) axes."""
    outputs, per_group = weight.shape[0], weight.shape[1]
    groups_of_outputs = np.arange(outputs) // (outputs // group)
    channels = groups_of_outputs[:, None] * per_group + np.arange(per_group)[None, :]
    return vector[channels].reshape(outputs, per_group, *([1] * (weight.ndim - 2)))


class FoldAffineIntoNextConv(ir.passes.InPlacePass):
    """Rules, for c and b constant along the channel axis only, each read by the Conv alone:
    Conv(Mul(x, c)) -> Conv'(x) with W'[o, i] = W[o, i] · c_i;
    Conv(Add(x, b)) -> Conv''(x) with B'[o] = B[o] + Σ_i,k W[o, i, k] · b_i, where the Conv pads nothing;
    Add(Mul(x, c), b) before a Conv that pads -> Mul(Add(x, b / c), c), c nonzero, so that the Mul folds.
    Values a given grid names (a QDQ model's) are left as they are.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        return ir.passes.PassResult(model, rewrite_until_unchanged(
            graph, lambda node, taken: node.op_type in ("Mul", "Add") and self._fold(graph, node, taken)))

    def _fold(self, graph: ir.Graph, node: ir.Node, taken: set[str]) -> bool:
        found = _data_and_constant(node)
        output = node.outputs[0]
        conv = single_consumer(output)
        if found is None or conv is None or conv.inputs[0] is not output:
            return False
        data, constant = found
        weight = _conv_weight(conv)
        if weight is None or GIVEN_GRID in output.meta or GIVEN_GRID in data.meta:
            return False
        group = attribute(conv, "group", 1)
        vector = channel_vector(constant, weight.ndim, weight.shape[1] * group)
        if vector is None:
            return False
        if node.op_type == "Mul":
            set_constant(graph, conv, 1, weight * _per_weight(weight, group, vector), taken)
        elif _pads_nothing(conv):
            bias = constant_array(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
            shift = (weight * _per_weight(weight, group, vector)).reshape(weight.shape[0], -1).sum(axis=1)
            set_constant(graph, conv, 2, (shift if bias is None else bias + shift).astype(np.float32), taken)
        else:
            return self._shift_before_scale(graph, node, data, vector, weight.ndim, taken)
        conv.replace_input_with(0, data)
        graph.remove(node, safe=True)
        return True

    def _shift_before_scale(self, graph: ir.Graph, add: ir.Node, data: ir.Value, shift: np.ndarray, rank: int,
                            taken: set[str]) -> bool:
        """Add(Mul(x, c), b) -> Mul(Add(x, b / c), c): the Mul then meets the Conv."""
        mul = data.producer()
        found = _data_and_constant(mul) if mul is not None and mul.op_type == "Mul" else None
        if found is None or single_consumer(data) is not add or GIVEN_GRID in data.meta:
            return False
        x, scale = found
        scale = channel_vector(scale, rank, shift.size)
        if scale is None or not np.all(scale != 0):
            return False
        moved = add_initializer(graph, unique_name(graph, f"{add.name}_shift", taken),
                                _broadcastable((shift / scale).astype(np.float32), rank))
        factor = add_initializer(graph, unique_name(graph, f"{mul.name}_scale", taken),
                                 _broadcastable(scale, rank))
        shifted = ir.node("Add", [x, moved], name=add.name)
        scaled = ir.node("Mul", [shifted.outputs[0], factor], name=mul.name)
        for value in (shifted.outputs[0], scaled.outputs[0]):
            value.dtype, value.shape = add.outputs[0].dtype or ir.DataType.FLOAT, add.outputs[0].shape
        shifted.outputs[0].name = unique_name(graph, f"{add.outputs[0].name}_before_scale", taken)
        graph.insert_after(add, [shifted, scaled])
        replace_output(graph, add.outputs[0], scaled.outputs[0])
        graph.remove([add, mul], safe=True)
        return True

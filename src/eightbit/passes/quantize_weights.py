"""The weights-only scheme: weights stored as int8 and dequantized at run time, math in float."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.config import Granularity, Scheme
from eightbit.ir.graph import constant_array
from eightbit.passes.qdq_nodes import dequantized_constant
from eightbit.passes.read_qdq import weight_grid_choice
from eightbit.passes.weight_rounding import rounded_constant
from eightbit.plan.ops import weight_axis

_WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Smaller tensors cost more in scale/zero-point overhead and accuracy than they save.
_MIN_ELEMENTS = 16


class QuantizeWeights(ir.passes.InPlacePass):
    """Rule: the constant weight of Conv, ConvTranspose, MatMul, Gemm, and the constant table of
    Gather (embeddings), become s8 codes + DequantizeLinear (eq. 6), per output channel (per
    row for Gather), each weight rounded to its nearest code (eq. 5) or, for nodes in `moments`,
    chosen by eq. 34. Activations and all arithmetic stay float: the file shrinks ~4x. Nodes named
    in `exclude` keep their float weights.
    """

    def __init__(self, scheme: Scheme, moments: dict[str, np.ndarray] | None = None,
                 exclude: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.scheme = scheme
        self.exclude = exclude
        # Node name -> its inputs' second moments: those nodes' weight codes are chosen by eq. 34.
        self.moments = moments or {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        taken: set[str] = set()
        done: dict[tuple[str, int | None], ir.Value] = {}
        per_channel = self.scheme.weights.granularity is Granularity.PER_CHANNEL
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.name in self.exclude:
                continue
            if node.op_type in _WEIGHTED and len(node.inputs) > 1:
                index, axis = 1, weight_axis(node)
            elif node.op_type == "Gather":
                index, axis = 0, 0
            else:
                continue
            value = node.inputs[index]
            array = constant_array(value)
            if array is None or array.dtype != np.float32 or array.size < _MIN_ELEMENTS:
                continue
            axis, given = weight_grid_choice(value, array, self.scheme, axis if per_channel else None)
            key = (value.name, axis)
            if key not in done and given is None and node.name in self.moments and index == 1:
                done[key], _ = rounded_constant(graph, node, value, array, self.moments[node.name],
                                                self.scheme.weights, axis, taken)
            if key not in done:
                done[key], _ = dequantized_constant(graph, value, array, self.scheme.weights, axis, node, taken,
                                                    given)
            node.replace_input_with(index, done[key])
            modified = True
        if modified:
            common_passes.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)

"""Fused activations written back as ops before the QuantizeLinear, for symmetric grids (docs, section 6c)."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from eightbit.passes.fuse_activation import CLAMP


class ClampsBeforeQuantize(ir.passes.InPlacePass):
    """Rule: op -> Q, where op's output carries a fused clamp [0, b] (passes/fuse_activation.py), becomes
    op -> Relu (b infinite) or Clip(0, b) -> Q, the clamp's output under the name the quantized value has.

    With an asymmetric grid, QuantizeLinear's saturation computes the clamp (eq. 8); a symmetric grid (zero
    point in the middle) cannot, so the activation is written back, where no Q/DQ pair separates it from the
    op: the grid is calibrated on the clamped range, and a runtime that fuses op, activation and quantize
    (TensorRT) rounds once.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            for value in node.outputs:
                bounds = value.meta.get(CLAMP)
                if bounds is None or bounds[0] != 0.0:
                    continue
                quantizers = [use for use in value.uses() if use.node.op_type == "QuantizeLinear" and use.idx == 0]
                if not quantizers:
                    continue
                clamped = self._clamp(graph, node, value, bounds[1])
                for use in quantizers:
                    use.node.replace_input_with(0, clamped)
                modified = True
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _clamp(graph: ir.Graph, node: ir.Node, value: ir.Value, top: float) -> ir.Value:
        """A Relu or Clip(0, top) of `value` after `node`; its output takes `value`'s name."""
        name = value.name
        value.name = f"{name}_unclamped"
        inputs = [value]
        if math.isfinite(top):
            low = ir.Value(name=f"{name}_low", const_value=ir.tensor(np.array(0.0, np.float32), name=f"{name}_low"))
            high = ir.Value(name=f"{name}_high", const_value=ir.tensor(np.array(top, np.float32), name=f"{name}_high"))
            graph.register_initializer(low)
            graph.register_initializer(high)
            inputs += [low, high]
        clamp = ir.node("Clip" if len(inputs) > 1 else "Relu", inputs, name=f"{node.name}_clamp")
        clamp.outputs[0].name = name
        clamp.outputs[0].type, clamp.outputs[0].shape = value.type, value.shape
        graph.insert_after(node, clamp)
        return clamp.outputs[0]

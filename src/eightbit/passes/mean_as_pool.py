"""A mean over every spatial axis, kept as it is, rewritten as GlobalAveragePool (PyTorch's exporter writes
adaptive average pooling to 1 and x.mean((2, 3), keepdim=True) that way)."""

from __future__ import annotations

import onnx_ir as ir

from eightbit.ir.graph import attribute, constant_array, replace_output


def _axes(node: ir.Node) -> list[int] | None:
    """The axes a ReduceMean reduces: its second input (opset 18) or its attribute; None where not constant."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = constant_array(node.inputs[1])
        return None if axes is None else [int(axis) for axis in axes.reshape(-1)]
    axes = attribute(node, "axes", None)
    return None if axes is None else [int(axis) for axis in axes]


class ReduceMeanAsGlobalPool(ir.passes.InPlacePass):
    """Rule: ReduceMean(x) over exactly the axes after the second of an x of rank 4 or more, with keepdims,
    -> GlobalAveragePool(x). The same values; GlobalAveragePool has an integer kernel, ReduceMean none. Not at
    rank 3: there a mean over the last axis is as often a layer norm's, over features, as a pool over time."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx") or not attribute(node, "keepdims", 1):
                continue
            shape, axes = node.inputs[0].shape, _axes(node)
            if shape is None or shape.rank() < 4 or axes is None:
                continue
            if sorted(axis % shape.rank() for axis in axes) != list(range(2, shape.rank())):
                continue
            pool = ir.node("GlobalAveragePool", [node.inputs[0]], name=node.name or None)
            graph.insert_after(node, pool)
            pool.outputs[0].dtype, pool.outputs[0].shape = node.outputs[0].dtype, node.outputs[0].shape
            replace_output(graph, node.outputs[0], pool.outputs[0])
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)

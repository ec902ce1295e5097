"""Variadic Sum rewritten as a chain of binary Adds (old exporters write residual adds as Sum)."""

from __future__ import annotations

import onnx_ir as ir

from eightbit.ir.graph import replace_output


class SumToAdd(ir.passes.InPlacePass):
    """Rule: Sum(a, b, c, ...) -> Add(...Add(Add(a, b), c)...); Sum(a) -> a.

    Binary Add has an integer kernel; Sum has none.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type != "Sum" or node.domain not in ("", "ai.onnx") or not node.inputs:
                continue
            if len(node.inputs) == 1 and node.outputs[0].is_graph_output():
                continue
            total = node.inputs[0]
            anchor = node
            for index, addend in enumerate(node.inputs[1:]):
                add = ir.node("Add", [total, addend], name=f"{node.name}_add{index}" if node.name else None)
                graph.insert_after(anchor, add)
                add.outputs[0].dtype = node.outputs[0].dtype
                add.outputs[0].shape = node.outputs[0].shape
                total, anchor = add.outputs[0], add
            replace_output(graph, node.outputs[0], total)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)

"""Removal of ops that do nothing at inference: Identity, and Dropout whose mask is unused."""

from __future__ import annotations

import onnx_ir as ir

from eightbit.ir.graph import replace_output


class RemoveIdentity(ir.passes.InPlacePass):
    """Rule: Identity(x) -> x; Dropout(x) -> x when its mask output is not read.

    A graph output keeps its name: the surviving value is renamed to it. An identity that
    connects a graph input straight to a graph output stays (the output needs a producer).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type not in ("Identity", "Dropout") or node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1].uses():
                continue
            if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1].is_graph_output():
                continue
            source, result = node.inputs[0], node.outputs[0]
            if result.is_graph_output() and (source.is_graph_input() or source.is_graph_output()
                                             or source.is_initializer()):
                continue
            replace_output(graph, result, source, takes_name=False)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)

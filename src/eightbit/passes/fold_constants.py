"""Constant folding."""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.ir import evaluate_node
from eightbit.ir.graph import add_initializer, constant_array, unique_name

# Never folded: nondeterministic ops, and Q/DQ, which carry ranges of an already quantized model.
_KEEP = {
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
}
# A folded result larger than this stays computed at run time: folding would only bloat the file.
_MAX_FOLDED_ELEMENTS = 1 << 26


class FoldConstants(ir.passes.InPlacePass):
    """Rule: a node whose inputs are all constants is replaced by initializers holding its outputs.

    Constant nodes become initializers first. Nodes with subgraphs and the ops in _KEEP stay.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        graph = model.graph
        opset = model.opset_imports.get("", 13)
        taken: set[str] = set()
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type in _KEEP or any(
                attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for attr in node.attributes.values()
            ):
                continue
            arrays = [constant_array(v) if v is not None else None for v in node.inputs]
            if any(a is None for a, v in zip(arrays, node.inputs) if v is not None):
                continue
            if not node.inputs and node.op_type != "ConstantOfShape":
                continue
            try:
                results = evaluate_node(node, arrays, opset)
            except Exception:  # an op the evaluator lacks stays as it is
                continue
            if sum(r.size for r in results) > _MAX_FOLDED_ELEMENTS:
                continue
            for output, result in zip(node.outputs, results):
                name = output.name or unique_name(graph, f"{node.name}_folded", taken)
                output.name = None
                folded = add_initializer(graph, name, result)
                folded.name = name
                output.replace_all_uses_with(folded, replace_graph_outputs=True)
            graph.remove(node, safe=True)
            modified = True
        if modified:
            common_passes.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)

"""Constant per-channel Mul and Add after a linear op folded into its weights and bias."""

from __future__ import annotations

import onnx_ir as ir

from eightbit.ir.graph import constant_array, replace_output, rewrite_until_unchanged, single_consumer
from eightbit.passes.output_channels import channel_vector, fold_scale_and_shift, output_channels, output_rank


class FoldAffineIntoConv(ir.passes.InPlacePass):
    """Rule: Mul(op(x), c) -> op'(x) and Add(op(x), c) -> op''(x), op in Conv, ConvTranspose, Gemm.

    c is a constant that varies at most along the channel axis (a scalar, [C], [1,C,1,1], ...).
    Exported models write learnable per-channel scales and batch norms this way. Applied
    repeatedly, a chain Conv -> Mul -> Add becomes one Conv.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = rewrite_until_unchanged(graph, lambda node, taken: _fold(graph, node, taken))
        return ir.passes.PassResult(model, modified)


def _fold(graph: ir.Graph, node: ir.Node, taken: set[str]) -> bool:
    """Fold `node`, a Mul or Add of a channel constant and a linear op's only-read output, into that op."""
    if node.op_type not in ("Mul", "Add") or node.domain not in ("", "ai.onnx"):
        return False
    for index in (0, 1):
        produced, other = node.inputs[index], node.inputs[1 - index]
        producer = produced.producer() if produced is not None else None
        constant = constant_array(other)
        if producer is None or constant is None or single_consumer(produced) is not node:
            continue
        channels = output_channels(producer)
        if channels is None:
            continue
        vector = channel_vector(constant, output_rank(producer), channels)
        if vector is None:
            continue
        if node.op_type == "Mul":
            fold_scale_and_shift(graph, producer, vector, None, taken)
        else:
            fold_scale_and_shift(graph, producer, None, vector, taken)
        replace_output(graph, node.outputs[0], produced)
        graph.remove(node, safe=True)
        return True
    return False

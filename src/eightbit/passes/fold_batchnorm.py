"""Batch normalization folded into the preceding Conv, ConvTranspose, Gemm or MatMul."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from eightbit.ir.graph import attribute, constant_array, replace_output, single_consumer
from eightbit.passes.output_channels import fold_scale_and_shift, output_channels


def _matmul_as_gemm(graph: ir.Graph, node: ir.Node) -> ir.Node | None:
    """MatMul(A[M,K], constant B[K,N]) -> Gemm(A, B), so that it has a bias to fold into."""
    a, b = node.inputs
    weight = constant_array(b)
    if weight is None or weight.ndim != 2 or a.shape is None or len(a.shape) != 2:
        return None
    gemm = ir.node("Gemm", [a, b], name=node.name)
    graph.insert_after(node, gemm)
    gemm.outputs[0].dtype = node.outputs[0].dtype
    gemm.outputs[0].shape = node.outputs[0].shape
    replace_output(graph, node.outputs[0], gemm.outputs[0])
    graph.remove(node, safe=True)
    return gemm


class FoldBatchNorm(ir.passes.InPlacePass):
    """Rule: BN(op(x)) -> op'(x) for op in Conv, ConvTranspose, Gemm, MatMul with constant weights.

    With f = scale / sqrt(var + epsilon): weights_c *= f_c, bias_c = (bias_c - mean_c) * f_c + B_c
    (docs/quantization.md, eq. 13). op's output must be read by the BN alone. A BN that follows
    anything else stays.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        taken: set[str] = set()
        modified = False
        for bn in list(graph):
            if bn.op_type != "BatchNormalization" or len(bn.outputs) != 1 or attribute(bn, "training_mode", 0):
                continue
            producer = bn.inputs[0].producer()
            if producer is None or single_consumer(bn.inputs[0]) is not bn:
                continue
            params = [constant_array(v) for v in bn.inputs[1:5]]
            if any(p is None for p in params):
                continue
            if producer.op_type == "MatMul":
                producer = _matmul_as_gemm(graph, producer)
                if producer is None:
                    continue
            channels = output_channels(producer)
            if channels is None or any(p.size != channels for p in params):
                continue
            gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
            factor = gamma / np.sqrt(var + attribute(bn, "epsilon", 1e-5))
            shift = beta - mean * factor
            fold_scale_and_shift(graph, producer, factor.astype(np.float32), shift.astype(np.float32), taken)
            replace_output(graph, bn.outputs[0], producer.outputs[0])
            graph.remove(bn, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)

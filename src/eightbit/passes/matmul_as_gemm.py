"""A fully connected layer written as MatMul and Add, made one Gemm."""

from __future__ import annotations

import onnx_ir as ir

from eightbit.ir.graph import add_initializer, constant_array, replace_output, single_consumer, unique_name


class MatMulBiasAsGemm(ir.passes.InPlacePass):
    """Rule: Add(MatMul(x, W), b) -> Gemm(x, W, b), for 2-D x, a constant [K, M] matrix W and a constant b
    of M values ([M] or [1, M]).

    Exporters write fully connected layers this way (PP-OCR's classifier head). As a Gemm the bias is added
    in the integer accumulator (eq. 7) rather than by an integer Add on a grid of its own, and a Gemm that
    no int8 op reads gives its output in float (docs/quantization.md, eq. 7c).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        taken: set[str] = set()
        modified = False
        for node in list(graph):
            if node.op_type != "Add" or node.domain not in ("", "ai.onnx"):
                continue
            for index in (0, 1):
                product, other = node.inputs[index], node.inputs[1 - index]
                matmul = product.producer() if product is not None else None
                if matmul is None or matmul.op_type != "MatMul" or matmul.domain not in ("", "ai.onnx"):
                    continue
                x, weight = matmul.inputs
                weights, bias = constant_array(weight), constant_array(other)
                if single_consumer(product) is not node or weights is None or weights.ndim != 2 or bias is None:
                    continue
                if bias.shape not in ((weights.shape[1],), (1, weights.shape[1])):
                    continue
                if x.shape is None or len(x.shape) != 2:
                    continue
                if bias.ndim != 1:
                    other = add_initializer(graph, unique_name(graph, f"{other.name}_vector", taken), bias.reshape(-1))
                gemm = ir.Node("", "Gemm", [x, weight, other], name=matmul.name)
                graph.insert_before(node, gemm)
                replace_output(graph, node.outputs[0], gemm.outputs[0])
                graph.remove([node, matmul], safe=True)
                modified = True
                break
        return ir.passes.PassResult(model, modified)

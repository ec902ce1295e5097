"""Evaluate one node on constant inputs with the ONNX reference evaluator (for constant folding)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
import onnx_ir as ir


def evaluate_node(node: ir.Node, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    """Outputs of `node` applied to `inputs` (None for an omitted optional input)."""
    names = [f"in{i}" if value is not None else "" for i, value in enumerate(inputs)]
    proto_node = ir.serde.serialize_node(node)
    del proto_node.input[:]
    proto_node.input.extend(names)
    del proto_node.output[:]
    proto_node.output.extend(f"out{i}" for i in range(len(node.outputs)))
    graph = onnx.helper.make_graph(
        [proto_node],
        "constant",
        [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None) for name in names if name],
        [onnx.helper.make_tensor_value_info(f"out{i}", onnx.TensorProto.UNDEFINED, None)
         for i in range(len(node.outputs))],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    feeds = {name: value for name, value in zip(names, inputs) if name}
    results = onnx.reference.ReferenceEvaluator(model).run(None, feeds)
    return [np.asarray(result) for result in results]

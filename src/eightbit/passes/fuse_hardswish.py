"""Hard-swish and hard-sigmoid written as elementwise arithmetic, fused into single ops."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.ir.graph import attribute, constant_array, replace_output

_HARDSWISH_OPSET = 14


def _is_constant(value: ir.Value | None, expected: float) -> bool:
    array = constant_array(value)
    return array is not None and array.size == 1 and abs(float(array.reshape(())) - expected) < 1e-6


def _operands(node: ir.Node, op_type: str) -> list[tuple[ir.Value, ir.Value]]:
    """(a, b) and (b, a) for a two-input `op_type` node, for commutative matching."""
    if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return []
    a, b = node.inputs
    return [(a, b), (b, a)] if op_type in ("Add", "Mul") else [(a, b)]


def _relu6_of_x_plus_3(value: ir.Value) -> ir.Value | None:
    """x if value = Clip(x + 3, 0, 6)."""
    clip = value.producer()
    if clip is None or clip.op_type != "Clip" or len(clip.inputs) != 3:
        return None
    if not (_is_constant(clip.inputs[1], 0.0) and _is_constant(clip.inputs[2], 6.0)):
        return None
    for x, three in _operands(clip.inputs[0].producer(), "Add"):
        if _is_constant(three, 3.0):
            return x
    return None


def _hard_sigmoid_of(value: ir.Value) -> ir.Value | None:
    """x if value = hard_sigmoid(x) = Clip(x + 3, 0, 6) / 6, in any of its exported spellings."""
    node = value.producer()
    if node is None:
        return None
    if node.op_type == "HardSigmoid":
        if abs(attribute(node, "alpha", 0.2) - 1 / 6) < 1e-6 and abs(attribute(node, "beta", 0.5) - 0.5) < 1e-6:
            return node.inputs[0]
        return None
    for clipped, six in _operands(node, "Div"):
        if _is_constant(six, 6.0):
            return _relu6_of_x_plus_3(clipped)
    for clipped, sixth in _operands(node, "Mul"):
        if _is_constant(sixth, 1 / 6):
            return _relu6_of_x_plus_3(clipped)
    return None


def _hard_swish_of(node: ir.Node) -> ir.Value | None:
    """x if node computes hard_swish(x) = x * hard_sigmoid(x)."""
    for x, gate in _operands(node, "Mul"):
        if _hard_sigmoid_of(gate) is x:
            return x
    scaled = [(p, c) for p, c in _operands(node, "Div") if _is_constant(c, 6.0)]
    scaled += [(p, c) for p, c in _operands(node, "Mul") if _is_constant(c, 1 / 6)]
    for product, _ in scaled:
        for x, clipped in _operands(product.producer(), "Mul"):
            if _relu6_of_x_plus_3(clipped) is x:
                return x
    return None


class FuseHardSwish(ir.passes.InPlacePass):
    """Rules: x * Clip(x + 3, 0, 6) / 6 -> HardSwish(x) (opset >= 14);
    Clip(x + 3, 0, 6) / 6 -> HardSigmoid(x, alpha=1/6, beta=1/2).

    One op quantizes its input and output once, where the arithmetic spelling would round
    after each of its four steps.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        can_hardswish = model.opset_imports.get("", 0) >= _HARDSWISH_OPSET
        modified = False
        for node in list(graph):
            if node.graph is None:
                continue
            x = _hard_swish_of(node) if can_hardswish else None
            fused = None
            if x is not None:
                fused = ir.node("HardSwish", [x], name=node.name)
            elif node.op_type != "HardSigmoid":
                x = _hard_sigmoid_of(node.outputs[0])
                if x is not None:
                    fused = ir.node(
                        "HardSigmoid", [x], {"alpha": np.float32(1 / 6).item(), "beta": 0.5}, name=node.name
                    )
            if fused is None:
                continue
            graph.insert_after(node, fused)
            fused.outputs[0].dtype = node.outputs[0].dtype
            fused.outputs[0].shape = node.outputs[0].shape
            replace_output(graph, node.outputs[0], fused.outputs[0])
            modified = True
        if modified:
            common_passes.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)

"""Relu and Clip(0, b) absorbed into the quantized output of the op before them."""

from __future__ import annotations

import math
from collections.abc import Collection

import onnx_ir as ir

from eightbit.ir.graph import constant_array, replace_output, single_consumer
from eightbit.passes.read_qdq import GIVEN_GRID, given_grid
from eightbit.plan.ops import OP_RULES, OutputRange
from eightbit.plan.planner import own_reason

CLAMP = "eightbit.clamp"
# The name of the activation's output that a fused value stands for once it is quantized.
FUSED_NAME = "eightbit.fused_name"


def clamp_bounds(node: ir.Node) -> tuple[float, float] | None:
    """[0, b] where `node` is Relu (b infinite) or Clip(0, b) with constant bounds, else None."""
    if node.op_type == "Relu":
        return 0.0, math.inf
    if node.op_type == "Clip" and len(node.inputs) >= 2:
        low = constant_array(node.inputs[1])
        high = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if low is None or low.size != 1 or float(low.reshape(())) != 0.0:
            return None
        if len(node.inputs) > 2 and node.inputs[2] is not None and high is None:
            return None
        return 0.0, math.inf if high is None else float(high.reshape(()))
    return None


class FuseActivations(ir.passes.InPlacePass):
    """Rule: act(op(x)) -> op(x) with the clamp [0, b] recorded on op's output, for act in Relu,
    Clip(0, b), when op is an int8 op with its own output range.

    The clamp narrows that output's calibrated range to [0, min(max, b)]; with zero_point at
    the bottom of the integer range, QuantizeLinear's saturation then computes the activation
    exactly (docs/quantization.md, eq. 8). A grid a QDQ model gives the activation's output moves
    to op's output, and the activation is fused only if that grid starts at 0 and ends at or
    below b. Only for static schemes with asymmetric activations:
    the model's float math, or a symmetric grid (zero_point in the middle), would otherwise lose
    the activation. Nodes named in `kept_float` stay float, so their activations stay too.
    """

    def __init__(self, kept_float: Collection[str] = ()) -> None:
        super().__init__()
        self.kept_float = frozenset(kept_float)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx"):
                continue
            bounds = clamp_bounds(node)
            value = node.inputs[0] if node.inputs else None
            producer = value.producer() if value is not None else None
            if bounds is None or producer is None or single_consumer(value) is not node:
                continue
            rule = OP_RULES.get(producer.op_type)
            if rule is None or rule.output is not OutputRange.OWN or own_reason(producer) is not None:
                continue
            if producer.name in self.kept_float:
                continue
            given = given_grid(node.outputs[0])
            if given is not None and not (given.starts_at_zero and given.top <= bounds[1]):
                continue  # a given grid that reaches below 0 or above b would not compute the activation
            if given is not None:
                value.meta[GIVEN_GRID] = given
            previous = value.meta.get(CLAMP, (-math.inf, math.inf))
            value.meta[CLAMP] = (max(previous[0], bounds[0]), min(previous[1], bounds[1]))
            if not node.outputs[0].is_graph_output():
                value.meta[FUSED_NAME] = node.outputs[0].name
            replace_output(graph, node.outputs[0], value, takes_name=False)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)


def name_after_activations(graph: ir.Graph) -> None:
    """Rename each fused value after the activation it absorbed: quantized, it holds that
    activation's output (eq. 8), and the original model calls that tensor by this name.

    Runs once calibration has read the values under their own names: before quantization,
    a fused value still holds its producer's output.
    """
    for node in graph:
        for value in node.outputs:
            name = value.meta.pop(FUSED_NAME, None)
            if name is not None and not value.is_graph_output():
                value.name = name

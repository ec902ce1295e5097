"""Integer matrix products that give their output in float (docs/quantization.md, eq. 7c)."""

from __future__ import annotations

import onnx_ir as ir

from eightbit.ir.graph import constant_array
from eightbit.passes.fuse_activation import CLAMP
from eightbit.passes.read_qdq import given_grid
from eightbit.plan.planner import FloatNode, Plan

# Ops whose integer kernel in ONNX Runtime can scale its int32 accumulator straight to a float output
# (QGemm with no output grid, MatMulIntegerToFloat); OpenVINO's list is plan/openvino.py's.
FLOAT_OUTPUT_OPS = ("Gemm", "MatMul")

CARRIES_FLOAT = "moves the float output of an integer matrix product (eq. 7c)"


def _carried_in_float(value: ir.Value, int8: set[ir.Node], movers: set[ir.Node]) -> set[ir.Node] | None:
    """The data-movement nodes that would move `value` on in float, where no other int8 op reads `value` or
    what they move (float ops and the graph may); None where one does."""
    carried: set[ir.Node] = set()
    for use in value.uses():
        reader = use.node
        if reader not in int8:
            continue
        if reader not in movers or use.idx != 0 or given_grid(reader.outputs[0]) is not None:
            return None
        further = _carried_in_float(reader.outputs[0], int8, movers)
        if further is None:
            return None
        carried |= {reader, *further}
    return carried


def float_output_carriers(node: ir.Node, int8: set[ir.Node], movers: set[ir.Node],
                          ops: tuple[str, ...] = FLOAT_OUTPUT_OPS) -> set[ir.Node] | None:
    """Where int8 `node` gives its output in float: the data-movement nodes that then move it in float (often
    none); None where it does not: it is not one of `ops` with constant weights, an int8 op reads its
    output, or that output has a fused activation or a given grid."""
    output = node.outputs[0]
    if node.op_type not in ops or constant_array(node.inputs[1]) is None:
        return None
    if output.meta.get(CLAMP) is not None or given_grid(output) is not None:
        return None
    return _carried_in_float(output, int8, movers)


def with_float_outputs(plan: Plan, ops: tuple[str, ...] = FLOAT_OUTPUT_OPS) -> Plan:
    """`plan` with its products among `ops` that can give float outputs doing so: their outputs are no longer
    observed, and the data-movement nodes that move those outputs become float nodes."""
    int8 = set(plan.int8_nodes)
    movers = {node for node in plan.int8_nodes if node.outputs[0] in plan.same_as}
    left_float: set[ir.Value] = set()
    now_float: set[ir.Node] = set()
    for node in plan.int8_nodes:
        carried = float_output_carriers(node, int8, movers, ops)
        if carried is not None:
            left_float.add(node.outputs[0])
            now_float |= carried
    if not left_float:
        return plan
    return Plan(
        int8_nodes=[node for node in plan.int8_nodes if node not in now_float],
        float_nodes=[*plan.float_nodes, *(FloatNode(node.name or node.outputs[0].name, node.op_type, CARRIES_FLOAT)
                                          for node in plan.int8_nodes if node in now_float)],
        observed=[value for value in plan.observed if value not in left_float],
        same_as={out: source for out, source in plan.same_as.items() if out.producer() not in now_float},
    )

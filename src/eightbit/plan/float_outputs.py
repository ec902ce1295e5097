"""Integer matrix products that give their output in float (docs/quantization.md, eq. 7c)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from eightbit.passes.constants import constant_array
from eightbit.passes.fuse_activation import CLAMP
from eightbit.passes.read_qdq import given_grid
from eightbit.plan.planner import Plan

# Ops whose integer kernel in ONNX Runtime can scale its int32 accumulator straight to a float output
# (QGemm with no output grid, MatMulIntegerToFloat).
FLOAT_OUTPUT_OPS = ("Gemm", "MatMul")


def gives_float_output(node: ir.Node, int8: set[ir.Node]) -> bool:
    """Whether int8 `node` is a matrix product by constant weights whose output no int8 op reads (only float
    ops or the graph), with no fused activation or given grid on that output."""
    output = node.outputs[0]
    if node.op_type not in FLOAT_OUTPUT_OPS or constant_array(node.inputs[1]) is None:
        return False
    if output.meta.get(CLAMP) is not None or given_grid(output) is not None:
        return False
    return all(use.node not in int8 for use in output.uses())


def with_float_outputs(plan: Plan) -> Plan:
    """`plan` with the outputs of its matrix products that give float outputs no longer observed: they get no
    grid, and their readers read the product's float output."""
    int8 = set(plan.int8_nodes)
    left_float = {node.outputs[0] for node in plan.int8_nodes if gives_float_output(node, int8)}
    return dataclasses.replace(plan, observed=[value for value in plan.observed if value not in left_float])

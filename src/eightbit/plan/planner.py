"""The static scheme's plan: int8 nodes, float nodes with reasons, tensors to calibrate."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from eightbit.ir.graph import constant_array
from eightbit.plan.ops import OP_RULES, OpRule, OutputRange, unsupported_reason

FLOAT = ir.DataType.FLOAT


@dataclasses.dataclass(frozen=True)
class FloatNode:
    """A node that stays in float, and why."""

    name: str
    op_type: str
    reason: str


@dataclasses.dataclass
class Plan:
    int8_nodes: list[ir.Node]
    float_nodes: list[FloatNode]
    # Activations whose range is calibrated, in graph order.
    observed: list[ir.Value]
    # Outputs of data-movement ops, which reuse their input's scale and zero point.
    same_as: dict[ir.Value, ir.Value]


def data_input_indices(node: ir.Node, rule: OpRule) -> list[int]:
    indices = range(len(node.inputs)) if rule.all_inputs_are_data else rule.data_inputs
    return [i for i in indices if i < len(node.inputs) and node.inputs[i] is not None]


def own_reason(node: ir.Node) -> str | None:
    """Why `node` cannot be int8 judged by itself (neighbours aside); None if it can."""
    rule = OP_RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if rule is None:
        return f"no int8 kernel for {node.op_type}"
    for index in data_input_indices(node, rule):
        if node.inputs[index].dtype != FLOAT:
            return f"input {index} is {node.inputs[index].dtype or 'of unknown type'}, not float32"
    if node.outputs[0].dtype != FLOAT:
        return f"output is {node.outputs[0].dtype or 'of unknown type'}, not float32"
    if rule.bias_input is not None and rule.bias_input < len(node.inputs):
        bias = node.inputs[rule.bias_input]
        if bias is not None and constant_array(bias) is None:
            return "bias is computed at run time"
        if bias is not None and node.op_type == "Gemm":
            shape = constant_array(bias).shape
            if len(shape) > 2 or any(size != 1 for size in shape[:-1]):
                return "Gemm C is not a bias vector"
            beta = node.attributes.get("beta")
            if beta is not None and beta.value != 1.0:
                return "Gemm with beta != 1"
    return unsupported_reason(node)


# Activations that follow a node kept float stay float with it.
_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")


def _touches_float(node: ir.Node) -> bool:
    return any(v is not None and v.dtype == FLOAT for v in node.outputs)


def make_plan(graph: ir.Graph, kept_float: dict[str, str] | None = None) -> Plan:
    """What `graph` computes in int8; nodes named in `kept_float` stay float with the reason given there,
    and so does a Relu or Clip that reads such a node's output (quantizing before it would keep the
    grid the float node was kept from)."""
    kept_float = dict(kept_float or {})
    int8: list[ir.Node] = []
    int8_set: set[ir.Node] = set()
    floats: list[FloatNode] = []
    same_as: dict[ir.Value, ir.Value] = {}
    for node in graph:
        producer = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
        if node.op_type in _ACTIVATIONS and producer is not None and producer.name in kept_float:
            kept_float.setdefault(node.name, kept_float[producer.name])
        reason = kept_float.get(node.name) or own_reason(node)
        rule = OP_RULES.get(node.op_type)
        if reason is None and rule.output is OutputRange.SAME_AS_INPUT:
            producer = node.inputs[0].producer()
            if producer not in int8_set:
                reason = "moves float data (its input does not come from an int8 op)"
        if reason is not None:
            if _touches_float(node):
                floats.append(FloatNode(node.name or node.outputs[0].name, node.op_type, reason))
            continue
        int8.append(node)
        int8_set.add(node)
        if rule.output is OutputRange.SAME_AS_INPUT:
            same_as[node.outputs[0]] = node.inputs[0]

    observed: list[ir.Value] = []
    seen: set[ir.Value] = set()

    def observe(value: ir.Value) -> None:
        if value not in seen and value not in same_as and constant_array(value) is None:
            seen.add(value)
            observed.append(value)

    for node in int8:
        rule = OP_RULES[node.op_type]
        for index in data_input_indices(node, rule):
            observe(node.inputs[index])
        observe(node.outputs[0])
    return Plan(int8_nodes=int8, float_nodes=floats, observed=observed, same_as=same_as)

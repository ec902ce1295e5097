"""Which inputs of each supported op are quantized, and how its output range is found."""

from __future__ import annotations

import dataclasses
import enum

import onnx_ir as ir

from eightbit.ir.graph import attribute, constant_array


class OutputRange(enum.Enum):
    OWN = "own"  # calibrated
    SAME_AS_INPUT = "same_as_input"  # data movement: output codes are input codes


@dataclasses.dataclass(frozen=True)
class OpRule:
    """How the static scheme quantizes an op.

    data_inputs: inputs quantized in the activation format (or, when constant and listed as
    the weight input, in the weight format). bias_input: stored as int32 at scale
    s_input * s_weight. Inputs not named (shapes, axes, pads, Clip bounds) stay as they are.
    """

    data_inputs: tuple[int, ...] = (0,)
    weight_input: int | None = None
    bias_input: int | None = None
    output: OutputRange = OutputRange.OWN
    all_inputs_are_data: bool = False


_MOVES_DATA = OpRule(output=OutputRange.SAME_AS_INPUT)

OP_RULES: dict[str, OpRule] = {
    "Conv": OpRule(weight_input=1, bias_input=2, data_inputs=(0, 1)),
    "ConvTranspose": OpRule(weight_input=1, bias_input=2, data_inputs=(0, 1)),
    "MatMul": OpRule(weight_input=1, data_inputs=(0, 1)),
    "Gemm": OpRule(weight_input=1, bias_input=2, data_inputs=(0, 1)),
    "Add": OpRule(data_inputs=(0, 1)),
    "Mul": OpRule(data_inputs=(0, 1)),
    "Concat": OpRule(all_inputs_are_data=True),
    "AveragePool": OpRule(),
    "GlobalAveragePool": OpRule(),
    "Sigmoid": OpRule(),
    "HardSigmoid": OpRule(),
    "HardSwish": OpRule(),
    "LeakyRelu": OpRule(),
    "Relu": OpRule(),
    "Clip": OpRule(),
    "MaxPool": _MOVES_DATA,
    "Reshape": _MOVES_DATA,
    "Transpose": _MOVES_DATA,
    "Flatten": _MOVES_DATA,
    "Squeeze": _MOVES_DATA,
    "Unsqueeze": _MOVES_DATA,
    "Slice": _MOVES_DATA,
    "Pad": _MOVES_DATA,
    "Resize": _MOVES_DATA,
    "Gather": _MOVES_DATA,  # indices (input 1) are integers, not data
}


def weight_axis(node: ir.Node) -> int | None:
    """Axis of the weight's output channels (per-channel scales run along it); None: per tensor."""
    weight = constant_array(node.inputs[1])
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if attribute(node, "group", 1) == 1 else None
    if node.op_type == "Gemm":
        return 0 if attribute(node, "transB", 0) else 1
    if node.op_type == "MatMul":
        return weight.ndim - 1 if weight is not None and weight.ndim >= 2 else None
    return None


def unsupported_reason(node: ir.Node) -> str | None:
    """Why the rule's op cannot run in int8 in this particular use, or None if it can."""
    if node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1].uses():
        return "MaxPool indices output is used"
    if node.op_type == "Pad":
        mode = attribute(node, "mode", "constant")
        value = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if mode == "constant" and value is not None and value.size and float(value.reshape(-1)[0]) != 0.0:
            return "Pad with a nonzero constant value"
    if node.op_type in ("Conv", "ConvTranspose") and constant_array(node.inputs[1]) is None:
        return "weights are computed at run time"
    if node.op_type == "Gemm" and attribute(node, "transA", 0):
        return "Gemm with transA=1 has no integer kernel"
    return None

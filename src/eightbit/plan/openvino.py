"""Where OpenVINO wants grids: on the inputs of the ops it runs on integers, and nowhere between an op and the
elementwise ops it computes in float inside that op's kernel (docs/quantization.md, section 6d).

OpenVINO runs a convolution or matrix product on integers when its inputs come through a quantize step, and
fuses the activation, the per-channel scale and shift and the next quantize step that follow it into the same
kernel, in float. A grid between the product and its activation splits that kernel: the product writes codes,
which are converted back to float, have their zero point subtracted, are scaled, activated and quantized
again (measured on PP-OCRv4 det: 29 conversions, 24 extra quantize layers, 2.7 ms of an 8 ms int8 run).
"""

from __future__ import annotations

import onnx_ir as ir

from eightbit.ir.graph import constant_array
from eightbit.plan.ops import OP_RULES, OutputRange

# Elementwise ops of one tensor that OpenVINO computes in float in the kernel of the op before them.
IN_KERNEL_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish")
# An Add or Mul by a constant is a scale or shift it fuses likewise.
IN_KERNEL_AFFINE = ("Add", "Mul")
# Integer products whose kernels give float outputs in OpenVINO where no integer op reads them.
FLOAT_OUTPUT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

IN_KERNEL = "OpenVINO computes it in float, in the kernel of the op before it"

# Value metadata: this tensor's grid is unsigned, with a zero point where its range has negative values.
UNSIGNED_GRID = "eightbit.unsigned_grid"


def _by_constant(node: ir.Node) -> bool:
    """An Add or Mul of one computed tensor and a constant."""
    data = [value for value in node.inputs if value is not None]
    return len(data) == 2 and sum(constant_array(value) is not None for value in data) == 1


def computed_in_kernel(graph: ir.Graph) -> dict[str, str]:
    """Rule: the activations of one tensor, and every Add or Mul by a constant, stay float (node name ->
    reason), so that no grid separates them from the op whose kernel computes them."""
    return {node.name: IN_KERNEL for node in graph if node.name and node.domain in ("", "ai.onnx") and
            (node.op_type in IN_KERNEL_ACTIVATIONS or (node.op_type in IN_KERNEL_AFFINE and _by_constant(node)))}


def _read_by_product(value: ir.Value) -> bool:
    """Whether a convolution or matrix product reads `value`, directly or through data movement."""
    for use in value.uses():
        rule = OP_RULES.get(use.node.op_type)
        if use.node.op_type in FLOAT_OUTPUT_OPS:
            return True
        if rule is not None and rule.output is OutputRange.SAME_AS_INPUT and _read_by_product(use.node.outputs[0]):
            return True
    return False


def mark_unsigned_grids(graph: ir.Graph) -> None:
    """Rule: a Concat that a convolution or matrix product reads takes the unsigned grid on its output and inputs
    (and, through data movement, on the tensors those are moved from). OpenVINO 2026.4's CPU plugin computes a
    convolution of a Concat's output on a signed grid wrongly (a float Concat, an s8 QuantizeLinear with zero
    point 0, a convolution: off from ONNX Runtime by 8.7 of 188, from a rounding of one input to whole numbers);
    on unsigned grids it agrees to rounding. Other Concats keep the usual grids: DenseNet's, which batch
    normalizations read, crashed OpenVINO (signal 11) with an unsigned grid that had a zero point."""
    for node in graph:
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx") or not _read_by_product(node.outputs[0]):
            continue
        for value in (node.outputs[0], *node.inputs):
            while value is not None and constant_array(value) is None:
                value.meta[UNSIGNED_GRID] = True
                producer = value.producer()
                rule = OP_RULES.get(producer.op_type) if producer is not None else None
                value = producer.inputs[0] if rule is not None and rule.output is OutputRange.SAME_AS_INPUT else None

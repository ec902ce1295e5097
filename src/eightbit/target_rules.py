"""The structural rules a model for TensorRT or an NPU must meet, checked on the written graph (docs, section 6c).

Neither runtime runs here, so what their builders require of a QDQ model is checked node by node instead:
each rule is one function that lists the places it is broken. TensorRT's come from its developer guide
(explicit quantization: int8 with zero point 0, per-channel weights on the output-channel axis, every input
of a weighted op quantized, both inputs of a residual Add); the NPU's from ONNX Runtime's QNN execution
provider (16-bit activations with zero points, symmetric int8 weights, int32 biases, standard QDQ at
opset 21).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import onnx_ir as ir

from eightbit.ir.graph import attribute, constant_array

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclasses.dataclass(frozen=True)
class Breach:
    """One place a rule is broken: the rule, the node, and what was found there."""

    rule: str
    node: str
    found: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.node}: {self.found}"


def _qdq_nodes(model: ir.Model) -> Iterator[tuple[ir.Node, np.ndarray | None, np.ndarray | None]]:
    """Every QuantizeLinear and DequantizeLinear with its scale and zero point (None where not constant)."""
    for node in model.graph:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.domain in ("", "ai.onnx"):
            scale = constant_array(node.inputs[1])
            zero = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
            yield node, scale, zero


def _dequantized(value: ir.Value | None) -> ir.Node | None:
    """The DequantizeLinear producing `value`, or None."""
    producer = value.producer() if value is not None else None
    return producer if producer is not None and producer.op_type == "DequantizeLinear" else None


def _code_type(node: ir.Node, zero: np.ndarray | None) -> np.dtype | None:
    """The integer type of a Q/DQ node's codes."""
    if zero is not None:
        return zero.dtype
    codes = constant_array(node.inputs[0]) if node.op_type == "DequantizeLinear" else None
    return codes.dtype if codes is not None else None


def standard_domain(model: ir.Model) -> list[Breach]:
    """Only standard ONNX operators: neither builder takes ONNX Runtime's contrib operators."""
    return [Breach("standard operators", node.name, f"{node.domain}.{node.op_type}") for node in model.graph
            if node.domain not in ("", "ai.onnx")]


def _weight_axis(node: ir.Node, rank: int) -> int:
    """The output-channel axis of a weighted op's weight."""
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if attribute(node, "transB", 0) else 1
    if node.op_type == "MatMul":
        return rank - 1
    return 0


def _weights(model: ir.Model) -> Iterator[tuple[ir.Node, ir.Node, np.ndarray]]:
    """Every weighted op whose weight is constant codes, with the weight's DequantizeLinear and those codes."""
    for node in model.graph:
        weight = _dequantized(node.inputs[1]) if node.op_type in WEIGHTED_OPS and len(node.inputs) > 1 else None
        codes = constant_array(weight.inputs[0]) if weight is not None else None
        if codes is not None:
            yield node, weight, codes


def weights_per_output_channel(model: ir.Model) -> list[Breach]:
    """A weight's scales run along its op's output channels, or it has one scale."""
    found = []
    for node, weight, codes in _weights(model):
        scale = constant_array(weight.inputs[1])
        if scale is None or scale.size == 1:
            continue
        axis = attribute(weight, "axis", 1) % codes.ndim
        if axis != _weight_axis(node, codes.ndim):
            found.append(Breach("weights per output channel", node.name, f"scales along axis {axis}"))
    return found


def symmetric_narrow_weights(model: ir.Model) -> list[Breach]:
    """Weight codes are int8 in [-127, 127] with zero point 0."""
    found = []
    for node, weight, codes in _weights(model):
        zero = constant_array(weight.inputs[2]) if len(weight.inputs) > 2 and weight.inputs[2] is not None else None
        if codes.dtype != np.int8 or codes.min() < -127 or (zero is not None and np.any(zero != 0)):
            found.append(Breach("symmetric int8 weights", node.name,
                                f"{codes.dtype} codes in [{codes.min()}, {codes.max()}]"))
    return found


def weighted_inputs_quantized(model: ir.Model) -> list[Breach]:
    """A weighted op with a quantized weight has its data input quantized too."""
    return [Breach("inputs of weighted ops quantized", node.name, "weight dequantized, data input float")
            for node in model.graph if node.op_type in WEIGHTED_OPS and len(node.inputs) > 1
            and _dequantized(node.inputs[1]) is not None and _dequantized(node.inputs[0]) is None]


def int8_zero_point_0(model: ir.Model) -> list[Breach]:
    """Every Q/DQ pair is int8 with zero point 0 (TensorRT's int8 is symmetric); biases stay float."""
    found = []
    for node, _, zero in _qdq_nodes(model):
        dtype = _code_type(node, zero)
        if dtype != np.int8 or (zero is not None and np.any(zero != 0)):
            found.append(Breach("int8, zero point 0", node.name, f"{dtype} codes, zero point "
                                                                 f"{None if zero is None else zero.reshape(-1)[:3]}"))
    return found


def activations_per_tensor(model: ir.Model, bits: int) -> list[Breach]:
    """Activations (tensors computed at run time) have one scale and `bits`-bit codes."""
    found = []
    for node, scale, zero in _qdq_nodes(model):
        if node.op_type != "QuantizeLinear":
            continue
        dtype = _code_type(node, zero)
        if scale is None or scale.size != 1 or dtype is None or dtype.itemsize * 8 != bits:
            found.append(Breach(f"{bits}-bit activations per tensor", node.name,
                                f"{dtype} codes, {None if scale is None else scale.size} scales"))
    return found


def residual_adds_quantized(model: ir.Model) -> list[Breach]:
    """An Add of two computed tensors has both inputs dequantized or neither, so the builder can fuse it into
    the convolution before it."""
    found = []
    for node in model.graph:
        if node.op_type != "Add" or len(node.inputs) != 2:
            continue
        computed = [value for value in node.inputs if value is not None and constant_array(value) is None]
        quantized = [value for value in computed if _dequantized(value) is not None]
        if len(computed) == 2 and len(quantized) == 1:
            found.append(Breach("both inputs of a residual Add quantized", node.name, "one input float"))
    return found


def int32_biases(model: ir.Model) -> list[Breach]:
    """Biases of weighted ops with a quantized weight are int32 codes with zero point 0."""
    found = []
    for node in model.graph:
        if node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3 or node.inputs[2] is None \
                or _dequantized(node.inputs[1]) is None:
            continue
        bias = _dequantized(node.inputs[2])
        codes = constant_array(bias.inputs[0]) if bias is not None else None
        if codes is None or codes.dtype != np.int32:
            found.append(Breach("int32 biases", node.name, "bias not int32 codes"))
    return found


def opset_21(model: ir.Model) -> list[Breach]:
    """16-bit QuantizeLinear and DequantizeLinear need opset 21."""
    opset = model.opset_imports.get("", 0)
    return [] if opset >= 21 else [Breach("opset 21", model.graph.name or "model", f"opset {opset}")]


RULES: dict[str, tuple[Callable[[ir.Model], list[Breach]], ...]] = {
    "tensorrt": (standard_domain, int8_zero_point_0, lambda m: activations_per_tensor(m, 8),
                 weights_per_output_channel, symmetric_narrow_weights, weighted_inputs_quantized,
                 residual_adds_quantized),
    "npu": (standard_domain, opset_21, lambda m: activations_per_tensor(m, 16), weights_per_output_channel,
            symmetric_narrow_weights, weighted_inputs_quantized, int32_biases),
}


def breaches(model: ir.Model, target: str) -> list[Breach]:
    """Every place `model` breaks a rule of `target` (none for targets without structural rules)."""
    return [breach for rule in RULES.get(target, ()) for breach in rule(model)]

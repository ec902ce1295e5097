"""Cross-layer equalization of the tensor before a depthwise convolution (docs/quantization.md, eq. 35).

Rule: P -> f... -> C, with P a Conv or Gemm with constant weights, f a chain of positively
homogeneous ops (Relu, LeakyRelu, MaxPool, AveragePool), each tensor read by the next op only, and
C a depthwise Conv (one input channel per filter) with a constant weight reading P's channels. P's
output channel i is multiplied by s_i and C's filters on channel i divided by it: the float model
computes the same function, and the tensors between them fit their one grid better.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from eightbit.passes.constants import attribute, constant_array, single_consumer
from eightbit.passes.output_channels import fold_scale_and_shift, output_channels, set_constant
from eightbit.quant.equalization import equalizing_factors

HOMOGENEOUS = ("Relu", "LeakyRelu", "MaxPool", "AveragePool")
PRODUCERS = ("Conv", "Gemm")


@dataclasses.dataclass
class Pair:
    """P, C and the tensors between them: `between[0]` is P's output, `between[-1]` what C reads."""

    producer: ir.Node
    consumer: ir.Node
    between: list[ir.Value]

    @property
    def measured(self) -> ir.Value:
        """The tensor whose channel ranges decide the factors: P's output after its activations (what the
        grid sees once they are fused)."""
        measured = self.between[0]
        for value in self.between[1:]:
            if value.producer().op_type not in ("Relu", "LeakyRelu"):
                break
            measured = value
        return measured


def _depthwise_weight(node: ir.Node) -> np.ndarray | None:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return None
    weight = constant_array(node.inputs[1])
    if weight is None or weight.dtype != np.float32 or weight.ndim < 3 or weight.shape[1] != 1:
        return None
    return weight if constant_array(node.inputs[0]) is None else None


def find_pairs(graph: ir.Graph) -> list[Pair]:
    """Every P -> f... -> C the rule allows, in graph order."""
    pairs = []
    for consumer in graph:
        weight = _depthwise_weight(consumer)
        if weight is None:
            continue
        between = [consumer.inputs[0]]
        node = between[0].producer()
        while node is not None and node.op_type in HOMOGENEOUS and node.domain in ("", "ai.onnx"):
            if len(node.outputs) != 1 or single_consumer(node.outputs[0]) is None:
                break
            between.insert(0, node.inputs[0])
            node = node.inputs[0].producer()
        if node is None or node.op_type not in PRODUCERS or single_consumer(between[0]) is None:
            continue
        if output_channels(node) != attribute(consumer, "group", 1):
            continue
        pairs.append(Pair(node, consumer, between))
    return pairs


def equalize(graph: ir.Graph, pair: Pair, factors: np.ndarray, taken: set[str]) -> None:
    """Multiply P's output channels by `factors`, divide C's filters on each channel by them."""
    fold_scale_and_shift(graph, pair.producer, factors.astype(np.float32), None, taken)
    weight = constant_array(pair.consumer.inputs[1])
    groups = weight.shape[0] // factors.size  # filters per input channel (the depth multiplier)
    per_filter = np.repeat(factors, groups).reshape((-1,) + (1,) * (weight.ndim - 1))
    set_constant(graph, pair.consumer, 1, (weight / per_filter).astype(np.float32), taken)


def equalize_channels(graph: ir.Graph, ranges: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Equalize every pair whose measured tensor has `ranges` (eq. 35); returns tensor name -> the factors
    its channels were multiplied by, for every tensor that changed."""
    taken: set[str] = set()
    scaled: dict[str, np.ndarray] = {}
    for pair in find_pairs(graph):
        if pair.measured.name not in ranges:
            continue
        factors = equalizing_factors(*ranges[pair.measured.name])
        if np.all(factors == 1.0):
            continue
        equalize(graph, pair, factors, taken)
        for value in pair.between:
            scaled[value.name] = factors
    return scaled

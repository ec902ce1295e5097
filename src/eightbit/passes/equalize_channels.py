"""Cross-layer equalization of the tensor between two convolutions (docs/quantization.md, eq. 35, 35b, 35c).

Rule: P -> f... -> C, with P a Conv or Gemm with constant weights, f a chain of ops that commute with
a positive per-channel scale (Relu, LeakyRelu, MaxPool, AveragePool; Mul by a positive constant;
Add of a constant, which is scaled with the channels; constants varying along the channel axis
only; at most one HardSwish, which becomes a gate of per-channel slope), each tensor read by the
next op only, and C a depthwise Conv (one input channel per filter) with a constant weight reading
P's channels; for weights on one grid per tensor (eq. 35c), C may also be a Conv of one group. P's
output channel i is multiplied by s_i and C's weights on channel i divided by it: the float model
computes the same function, and the tensors between them (eq. 35, 35b), or the weights (eq. 35c), fit
their one grid better.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from eightbit.ir.graph import attribute, constant_array, constant_operand, replace_output, single_consumer
from eightbit.passes.hard_gates import HARD_SWISH, gate_form
from eightbit.passes.output_channels import (
    channel_vector,
    float_weight,
    fold_scale_and_shift,
    output_channels,
    set_constant,
)
from eightbit.quant.equalization import equalizing_factors, swish_equalizing_factors, weight_equalizing_factors

HOMOGENEOUS = ("Relu", "LeakyRelu", "MaxPool", "AveragePool")
PRODUCERS = ("Conv", "Gemm")


def _channel_operand(node: ir.Node, channels: int, rank: int) -> tuple[int, np.ndarray] | None:
    """(index, one value per channel) of the constant input of a two-input node whose other input is not
    constant, where that constant varies at most along the channel axis."""
    found = constant_operand(node)
    vector = channel_vector(found[1], rank, channels) if found is not None else None
    return None if vector is None else (found[0], vector)


def _scaled_input(node: ir.Node, channels: int, rank: int) -> ir.Value | None:
    """The input whose channel scales `node` carries to its output, if op(s_c · x) = s_c · op'(x) per channel
    (op' = op, or op with its constant scaled per channel); else None."""
    if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
        return None
    if node.op_type in HOMOGENEOUS or node.op_type == "HardSwish":
        return node.inputs[0]
    operand = _channel_operand(node, channels, rank) if node.op_type in ("Mul", "Add") else None
    if operand is None or (node.op_type == "Mul" and not bool(np.all(operand[1] > 0))):
        return None
    return node.inputs[1 - operand[0]]


@dataclasses.dataclass
class Pair:
    """P, C and the tensors between them: `between[0]` is P's output, `between[-1]` what C reads."""

    producer: ir.Node
    consumer: ir.Node
    between: list[ir.Value]

    @property
    def dense(self) -> bool:
        """Whether C mixes the channels (a convolution of one group) rather than filtering each alone."""
        return constant_array(self.consumer.inputs[1]).shape[1] > 1

    @property
    def swish(self) -> ir.Node | None:
        """The HardSwish between P and C, if one is (eq. 35b)."""
        return next((v.producer() for v in self.between[1:] if v.producer().op_type == "HardSwish"), None)

    @property
    def measured(self) -> ir.Value:
        """The tensor whose channel ranges decide the factors: P's output after its activations (what the
        grid sees once they are fused); past a hard-swish, what C reads."""
        if self.swish is not None:
            return self.between[-1]
        measured = self.between[0]
        for value in self.between[1:]:
            if value.producer().op_type not in ("Relu", "LeakyRelu"):
                break
            measured = value
        return measured


def _consumer_weight(node: ir.Node, dense: bool) -> tuple[np.ndarray, int] | None:
    """(weight, channels read) of a Conv that can be C: constant float weights and a non-constant input, one
    input channel per filter (depthwise), or, where `dense`, also one group."""
    weight = float_weight(node) if node.op_type == "Conv" else None
    if weight is None or weight.ndim < 3 or constant_array(node.inputs[0]) is not None:
        return None
    if weight.shape[1] == 1:
        return weight, attribute(node, "group", 1)
    return (weight, weight.shape[1]) if dense and attribute(node, "group", 1) == 1 else None


def find_pairs(graph: ir.Graph, dense: bool = False, through_swish: bool = True) -> list[Pair]:
    """Every P -> f... -> C the rule allows, in graph order; C of one group too where `dense` (eq. 35c); none
    with a HardSwish between unless `through_swish`."""
    pairs = []
    for consumer in graph:
        found = _consumer_weight(consumer, dense)
        if found is None:
            continue
        weight, channels = found
        rank = weight.ndim
        between = [consumer.inputs[0]]
        node = between[0].producer()
        swishes = 0
        while node is not None and (data := _scaled_input(node, channels, rank)) is not None:
            swishes += node.op_type == "HardSwish"
            if single_consumer(node.outputs[0]) is None or swishes > int(through_swish):
                break
            between.insert(0, data)
            node = data.producer()
        if node is None or node.op_type not in PRODUCERS or single_consumer(between[0]) is None:
            continue
        if output_channels(node) != channels:
            continue
        pairs.append(Pair(node, consumer, between))
    return pairs


def equalize(graph: ir.Graph, pair: Pair, factors: np.ndarray, taken: set[str]) -> None:
    """Multiply P's output channels by `factors`, divide C's filters on each channel by them, and rewrite the
    ops between so that each computes its old output times the factors: an Add's constant is scaled with the
    channels, a HardSwish becomes the gate form with slope 1/(6 f_c) on channel c (eq. 35b)."""
    fold_scale_and_shift(graph, pair.producer, factors.astype(np.float32), None, taken)
    weight = constant_array(pair.consumer.inputs[1])
    per_channel = factors.astype(np.float32).reshape((1, -1) + (1,) * (weight.ndim - 2))
    for value in pair.between[1:]:
        node = value.producer()
        if node.op_type == "Add":
            index, shift = _channel_operand(node, factors.size, weight.ndim)
            set_constant(graph, node, index, shift.reshape(per_channel.shape) * per_channel, taken)
        elif node.op_type == "HardSwish":
            slope, offset = HARD_SWISH
            new, result = gate_form(graph, node, node.inputs[0], slope / factors.astype(np.float32), offset,
                                    product=True, taken=taken)
            graph.insert_after(node, new)
            replace_output(graph, node.outputs[0], result)
            graph.remove(node, safe=True)
    set_constant(graph, pair.consumer, 1, divided_on_read_channels(weight, factors), taken)


def divided_on_read_channels(weight: np.ndarray, factors: np.ndarray) -> np.ndarray | None:
    """A convolution's `weight` (float32) with its weights on input channel i divided by factors[i]: each
    channel's filters for a depthwise one (as many as its depth multiplier), each column for one of one
    group; None for any other layout."""
    factors = factors.astype(np.float32)
    if weight.shape[1] == 1 and weight.shape[0] % factors.size == 0:
        per_channel = np.repeat(factors, weight.shape[0] // factors.size).reshape((-1,) + (1,) * (weight.ndim - 1))
    elif weight.shape[1] == factors.size:
        per_channel = factors.reshape((1, -1) + (1,) * (weight.ndim - 2))
    else:
        return None
    return (weight / per_channel).astype(np.float32)


def _weight_ranges(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """The largest |weight| of P's output channel i and of C's weights on channel i, for each channel i."""
    producer = float_weight(pair.producer)
    if pair.producer.op_type == "Gemm" and not attribute(pair.producer, "transB", 0):
        producer = producer.T  # (outputs, inputs)
    consumer = constant_array(pair.consumer.inputs[1])
    per_channel = np.moveaxis(consumer, 1, 0) if pair.dense else consumer
    return (np.abs(producer.reshape(producer.shape[0], -1)).max(axis=1),
            np.abs(per_channel.reshape(producer.shape[0], -1)).max(axis=1))


def _equalize_all(graph: ir.Graph, pairs: list[Pair],
                  factors_of: Callable[[Pair], np.ndarray]) -> dict[str, np.ndarray]:
    """Equalize each of `pairs` in turn by `factors_of(pair)`, read as it comes (after the pairs before it);
    returns tensor name -> the factors its channels were multiplied by, for every tensor that changed."""
    taken: set[str] = set()
    scaled: dict[str, np.ndarray] = {}
    for pair in pairs:
        factors = factors_of(pair)
        if np.all(factors == 1.0):
            continue
        names = [value.name for value in pair.between]
        equalize(graph, pair, factors, taken)
        for name in names:
            scaled[name] = factors
    return scaled


def equalize_channels(graph: ir.Graph, ranges: dict[str, tuple[np.ndarray, np.ndarray]],
                      through_swish: bool = True) -> dict[str, np.ndarray]:
    """Equalize every pair whose measured tensor has `ranges` (eq. 35, 35b; through a hard-swish only where
    `through_swish`); returns tensor name -> the factors its channels were multiplied by, for every tensor that
    changed."""

    def factors_of(pair: Pair) -> np.ndarray:
        low, high = ranges[pair.measured.name]
        if pair.swish is None:
            return equalizing_factors(low, high)
        weight = constant_array(pair.consumer.inputs[1]).astype(np.float64)
        return swish_equalizing_factors(low, high, np.square(weight.reshape(low.size, -1)).sum(axis=1))

    pairs = find_pairs(graph, through_swish=through_swish)
    return _equalize_all(graph, [pair for pair in pairs if pair.measured.name in ranges], factors_of)


def equalize_weights(graph: ir.Graph, through_swish: bool = True) -> dict[str, np.ndarray]:
    """Balance the weights of every pair, C of one group included, for weights on one grid per tensor (eq. 35c);
    returns what equalize_channels returns."""
    return _equalize_all(graph, find_pairs(graph, dense=True, through_swish=through_swish),
                         lambda pair: weight_equalizing_factors(*_weight_ranges(pair)))

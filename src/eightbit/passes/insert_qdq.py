"""The static scheme's rewrite: integer weights, int32 biases and Q/DQ pairs on activations."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.config import Granularity, Scheme
from eightbit.ir.graph import attribute, constant_array
from eightbit.passes.fuse_activation import CLAMP
from eightbit.passes.hard_gates import swish_product, swish_slope
from eightbit.passes.qdq_nodes import dequantized_codes, dequantized_constant, quantize_dequantize
from eightbit.passes.read_qdq import given_grid, grid_in_format, weight_grid_choice
from eightbit.passes.weight_rounding import rounded_constant
from eightbit.plan import OP_RULES, OpRule, Plan
from eightbit.plan.openvino import UNSIGNED_GRID
from eightbit.plan.ops import weight_axis
from eightbit.plan.planner import data_input_indices
from eightbit.quant import choose_qparams, quantize_bias
from eightbit.quant.affine import QParams
from eightbit.quant.rounding import InputMoments
from eightbit.quant.saturation import hard_sigmoid_live_range, hard_swish_live_range, sigmoid_live_range
from eightbit.quant.weights import least_weight_scale


def _live_range(node: ir.Node, output: QParams, scheme: Scheme) -> tuple[float, float] | None:
    """Input range outside which a saturating activation's output code stops changing (eq. 8a)."""
    scale, zero_point = float(output[0]), int(output[1])
    fmt = scheme.format_of(output[1])
    if node.op_type == "Sigmoid":
        return sigmoid_live_range(scale, zero_point, fmt)
    if node.op_type == "HardSwish":
        return hard_swish_live_range(scale, zero_point, fmt)
    if node.op_type == "HardSigmoid":
        alpha, beta = attribute(node, "alpha", 0.2), attribute(node, "beta", 0.5)
        return hard_sigmoid_live_range(scale, zero_point, fmt, alpha, beta) if alpha > 0 else None
    return None


def _saturating_reader_range(
    value: ir.Value, int8: set[ir.Node], params: dict[ir.Value, QParams], scheme: Scheme
) -> tuple[float, float] | None:
    """The union of the live ranges of `value`'s readers, if every reader is an int8 saturating activation
    (a hard-swish in gate form counts as one: its gate and its product read `value`)."""
    if value.is_graph_output() or not value.uses():
        return None
    product = swish_product(value)
    if product is not None:
        output = product.outputs[0]
        if product not in int8 or output not in params:
            return None
        scale, zero_point = params[output]
        return hard_swish_live_range(float(scale), int(zero_point), scheme.format_of(zero_point), swish_slope(value))
    low, high = math.inf, -math.inf
    for use in value.uses():
        output = use.node.outputs[0]
        if use.node not in int8 or use.idx != 0 or output not in params:
            return None
        live = _live_range(use.node, params[output], scheme)
        if live is None:
            return None
        low, high = min(low, live[0]), max(high, live[1])
    return low, high


def activation_qparams(plan: Plan, ranges: dict[str, tuple[float, float]], scheme: Scheme) -> dict[ir.Value, QParams]:
    """Scale and zero point of every quantized activation (eq. 2-3, 8, 8a).

    A grid the model gives (a QDQ model, section 12) is kept as it is. Other ranges are the
    calibrated ones, clamped by fused activations (eq. 8) and, for tensors
    read only by saturating activations, by the inputs that still change the reader's output
    code (eq. 8a). Readers are settled before the tensors they read (reverse graph order).
    """
    int8 = set(plan.int8_nodes)
    params: dict[ir.Value, QParams] = {}
    for value in reversed(plan.observed):
        given = given_grid(value)
        if given is not None:
            params[value] = grid_in_format(value, given, scheme.format_of(given.zero_point), scheme.name)
            continue
        low, high = ranges[value.name]
        clamp_low, clamp_high = value.meta.get(CLAMP, (-math.inf, math.inf))
        bound = _bound(value, clamp_low, clamp_high)
        if bound is not None and _one_value_per_channel(value):
            low, high = bound
        live = _saturating_reader_range(value, int8, params, scheme)
        if live is not None and live[0] < live[1]:
            # One step of margin: rounding the zero point moves the grid by up to half a step, and
            # the grid must still reach the bound for clipped inputs to give the saturated code.
            span = max(min(high, live[1]) - max(low, live[0]), 0.0)
            fmt = scheme.activation_format(max(low, live[0]), bool(value.meta.get(UNSIGNED_GRID)))
            step = span / (fmt.qmax - fmt.qmin)
            clamp_low, clamp_high = max(clamp_low, live[0] - step), min(clamp_high, live[1] + step)
        low, high = max(low, clamp_low), min(high, clamp_high)
        if low > high:  # everything observed lies outside the clamp
            low = high = clamp_low if math.isfinite(clamp_low) else clamp_high if math.isfinite(clamp_high) else 0.0
        params[value] = choose_qparams(low, high, scheme.activation_format(low, bool(value.meta.get(UNSIGNED_GRID))))
    ordered = {value: params[value] for value in plan.observed}
    for node in plan.int8_nodes:
        output = node.outputs[0]
        if output in plan.same_as:
            ordered[output] = ordered[plan.same_as[output]]
    return ordered


def _bound(value: ir.Value, clamp_low: float, clamp_high: float) -> tuple[float, float] | None:
    """The range `value` cannot leave: its fused clamp bounded on both sides, or a sigmoid's [0, 1]."""
    if math.isfinite(clamp_low) and math.isfinite(clamp_high):
        return clamp_low, clamp_high
    producer = value.producer()
    if producer is not None and producer.op_type in ("Sigmoid", "HardSigmoid"):
        return 0.0, 1.0
    return None


def _one_value_per_channel(value: ir.Value) -> bool:
    """Whether `value` holds one value per channel per sample (every axis after the second has size 1),
    as a squeeze-and-excitation gate does: calibration then sees one value per channel per sample."""
    shape = value.shape
    return shape is not None and len(shape) >= 2 and all(dim == 1 for dim in shape.dims[2:])


def _one_range(array: np.ndarray, axis: int) -> bool:
    """Whether every channel along `axis` has the same largest magnitude (and so the same weight scale)."""
    reduce = tuple(a for a in range(array.ndim) if a != axis % array.ndim)
    peaks = np.abs(array).max(axis=reduce) if reduce else np.abs(array)
    return peaks.size > 1 and bool(np.all(peaks == peaks.reshape(-1)[0]))


class InsertQDQ(ir.passes.InPlacePass):
    """Rules, for every int8 node of the plan:
    - each float activation it reads or writes gets one QuantizeLinear -> DequantizeLinear pair,
      shared by all readers (eq. 5, 1);
    - its weight becomes s8 (per channel along the output-channel axis) + DequantizeLinear (eq. 6),
      each weight rounded to the nearest code (eq. 5) or, for nodes in `moments`, by eq. 34;
    - its bias becomes int32 at scale s_input * s_weight + DequantizeLinear (eq. 7), its values
      saturated to scheme.bias_bits (counted per node in `bias_saturation`), or stays float where the
      scheme says (scheme.float_bias);
    - other constant inputs (an Add's addend) are stored in the activation format;
    - without `pairs_after_moves`, a data-movement op's output gets no pair of its own: it moves values already
      on its input's grid, and its readers read them as they are (OpenVINO moves the dequantization through
      such ops; a pair after each would keep it from fusing them, section 6d).
    Readers of an int8 op's output all read the dequantized value; readers of a float op's
    output keep the float value unless they are int8 themselves. Graph outputs keep their names.
    """

    def __init__(self, plan: Plan, qparams: dict[ir.Value, QParams], scheme: Scheme,
                 moments: dict[str, np.ndarray] | None = None, pairs_after_moves: bool = True) -> None:
        super().__init__()
        self.plan, self.qparams, self.scheme = plan, qparams, scheme
        self.pairs_after_moves = pairs_after_moves
        # Node name -> its inputs' second moments: those nodes' weight codes are chosen by eq. 34 (once for
        # every build that shares an InputMoments).
        self.moments = moments or {}
        self.known_codes = moments.codes if isinstance(moments, InputMoments) else None
        # Node name -> (bias values clipped to scheme.bias_bits, bias values), for the report.
        self.bias_saturation: dict[str, tuple[int, int]] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        taken: set[str] = set()
        int8 = set(self.plan.int8_nodes)
        self._constants(graph, taken)
        for value, (scale, zero_point) in self.qparams.items():
            if value in self.plan.same_as and not self.pairs_after_moves:
                continue
            dequantized = quantize_dequantize(graph, value, scale, zero_point, taken)
            quantizer = dequantized.producer().inputs[0].producer()
            from_int8 = value.producer() in int8
            for use in value.uses():
                if use.node is quantizer:
                    continue
                reads_quantized = use.node in int8 and use.idx in data_input_indices(
                    use.node, OP_RULES[use.node.op_type]
                )
                if from_int8 or reads_quantized:
                    use.node.replace_input_with(use.idx, dequantized)
            if from_int8 and value.is_graph_output():
                name, outputs = value.name, graph.outputs
                value.name = f"{name}_float"
                dequantized.name = name
                outputs[outputs.index(value)] = dequantized
        common_passes.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, True)

    def _constants(self, graph: ir.Graph, taken: set[str]) -> None:
        weights: dict[tuple[str, int | None], tuple[ir.Value, np.ndarray]] = {}
        others: dict[str, ir.Value] = {}
        per_channel = self.scheme.weights.granularity is Granularity.PER_CHANNEL
        for node in self.plan.int8_nodes:
            rule = OP_RULES[node.op_type]
            weight_scale: np.ndarray | None = None
            for index in data_input_indices(node, rule):
                value = node.inputs[index]
                array = constant_array(value)
                if array is None:
                    continue
                if index == rule.weight_input:
                    axis = weight_axis(node) if per_channel else None
                    if axis is not None and _one_range(array, axis):
                        axis = None  # every channel would get the same scale: store it once
                    axis, given = weight_grid_choice(value, array, self.scheme, axis)
                    key = (value.name, axis)
                    least = self._least_weight_scale(node, rule, array, axis)
                    if key not in weights and given is None and node.name in self.moments:
                        weights[key] = self._rounded(graph, node, value, array, axis, taken, least)
                    if key not in weights:
                        weights[key] = dequantized_constant(
                            graph, value, array, self.scheme.weights, axis, node, taken, given, least
                        )
                    replacement, weight_scale = weights[key]
                else:
                    if value.name not in others:
                        fmt = self.scheme.activation_format(float(np.min(array, initial=0.0)))
                        others[value.name], _ = dequantized_constant(graph, value, array, fmt, None, node, taken)
                    replacement = others[value.name]
                node.replace_input_with(index, replacement)
            bias_index = rule.bias_input
            if bias_index is not None and bias_index < len(node.inputs) and node.inputs[bias_index] is not None \
                    and not self.scheme.float_bias:
                self._bias(graph, node, bias_index, weight_scale, taken)

    def _least_weight_scale(self, node: ir.Node, rule: OpRule, array: np.ndarray,
                            axis: int | None) -> np.ndarray | None:
        """Per channel of `node`'s weight, the scale below which its bias would not fit the bias format
        (eq. 7a); None without a constant bias, or for weights on one grid (widening it for one channel's
        bias would coarsen every channel: that bias saturates, and the report counts it)."""
        index = rule.bias_input
        if axis is None or index is None or self.scheme.float_bias or index >= len(node.inputs) \
                or node.inputs[index] is None:
            return None
        bias = constant_array(node.inputs[index])
        if bias is None:
            return None
        least = least_weight_scale(bias, self._scale_of(node.inputs[0]), self.scheme.bias)
        return least if array.shape[axis] == least.size else None  # grouped ConvTranspose: not per output

    def _rounded(self, graph: ir.Graph, node: ir.Node, value: ir.Value, array: np.ndarray, axis: int | None,
                 taken: set[str], least: np.ndarray | None) -> tuple[ir.Value, np.ndarray]:
        """Weight codes chosen by eq. 34 from the node's input moments, on the grid eq. 6 gives."""
        input_scale = float(np.max(self._scale_of(node.inputs[0])))
        return rounded_constant(graph, node, value, array, self.moments[node.name], self.scheme.weights, axis,
                                taken, input_scale, least, self.known_codes)

    def _bias(self, graph: ir.Graph, node: ir.Node, index: int, weight_scale: np.ndarray | None,
              taken: set[str]) -> None:
        value = node.inputs[index]
        bias = constant_array(value).astype(np.float32).reshape(-1)
        input_scale = self._scale_of(node.inputs[0])
        if weight_scale is None:
            weight_scale = self._scale_of(node.inputs[1])
        fmt = self.scheme.bias
        codes, scale = quantize_bias(bias, input_scale, np.broadcast_to(weight_scale, bias.shape), fmt)
        exact = np.rint(bias.astype(np.float64) / scale.astype(np.float64))
        clipped = int(np.count_nonzero((exact < fmt.qmin) | (exact > fmt.qmax)))
        self.bias_saturation[node.name or value.name] = (clipped, int(bias.size))
        if scale.size > 1 and np.all(scale == scale.reshape(-1)[0]):
            scale = scale.reshape(-1)[0]  # one scale for every channel (weights per tensor): stored once
        zero_point = np.zeros(scale.shape, dtype=np.int32)
        node.replace_input_with(
            index, dequantized_codes(graph, value, codes, scale, zero_point, 0, node, taken)
        )

    def _scale_of(self, value: ir.Value) -> np.ndarray:
        """Scale of an activation in the plan, or of a constant already replaced by its DequantizeLinear."""
        if value in self.qparams:
            return self.qparams[value][0]
        producer = value.producer()
        if producer is not None and producer.op_type == "DequantizeLinear":
            return producer.inputs[1].const_value.numpy()
        raise AssertionError(f"no scale known for {value.name}")

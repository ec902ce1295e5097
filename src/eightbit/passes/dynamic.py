"""The dynamic scheme: weights stored as integers offline, activations quantized at run time."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.config import Granularity, IntegerFormat
from eightbit.ir.graph import add_initializer, attribute, constant_array, unique_name
from eightbit.passes.qdq_nodes import dequantized_codes
from eightbit.plan import FloatNode
from eightbit.quant import dequantize, quantize
from eightbit.quant.bias_correction import conv_output_shift, matmul_output_shift
from eightbit.quant.weights import weight_qparams

FLOAT = ir.DataType.FLOAT
MICROSOFT = "com.microsoft"
# Offset codes: a symmetric grid stored as uint8 with zero point 128 (q + 128), the form ONNX Runtime's
# u8 x u8 kernels take; the products never pass through 16 bits, so every CPU computes them exactly.
OFFSET = 128
_RECURRENT_WITHOUT_KERNEL = ("GRU", "RNN")


@dataclasses.dataclass(frozen=True)
class DynamicChoices:
    """What the dynamic rewrite does (docs/quantization.md, section 13)."""

    # Symmetric weight codes (per output channel or per tensor; 8 or fewer value bits).
    weights: IntegerFormat
    # Store weight codes as uint8 + 128 (u8 x u8 kernels) instead of int8 (u8 x s8 kernels).
    offset_codes: bool
    # Quantize MatMuls whose two operands are both computed at run time (attention's Q K^T, P V).
    activation_products: bool = False
    # Quantize Conv inputs at run time; otherwise a Conv keeps integer weights and float math.
    convolutions: bool = False


# The choices a measurement decides, and what each quantizes at run time.
MEASURED_CHOICES = {"activation_products": "MatMuls of two run-time tensors", "convolutions": "Convs"}


def _rounded(array: np.ndarray, fmt: IntegerFormat, axis: int | None) -> tuple[np.ndarray, ...]:
    """(codes, scale, zero point, rounding error) of a weight on its own grid (eq. 4-5)."""
    scale, zero_point = weight_qparams(array, fmt, axis)
    codes = quantize(array, scale, zero_point, fmt, axis)
    return codes, scale, zero_point, dequantize(codes, scale, zero_point, axis) - array


class QuantizeDynamically(ir.passes.InPlacePass):
    """Rules (eq. 30-31):
    - MatMul with a constant 2-D B, Gemm (transA = 0) with a constant B, Conv with a constant weight:
      x -> DynamicQuantizeLinear -> MatMulInteger / ConvInteger with the integer weight -> Cast ->
      Mul by (x's scale x the weight's scales) [-> Add the bias]. One DynamicQuantizeLinear per
      tensor, shared by its readers.
    - MatMul of two run-time tensors, when `activation_products`: both quantized at run time.
    - Conv, unless `convolutions`: integer weights + DequantizeLinear, math in float.
    - LSTM: com.microsoft DynamicQuantizeLSTM (ONNX Runtime's integer LSTM), weights transposed to
      [directions, inputs, 4 x hidden], scales per gate row.
    - GRU, RNN: weights stored as integers + DequantizeLinear, math in float (no integer kernel).
    With `input_means` (per-channel means of Conv and Gemm inputs on calibration samples, by
    name), Conv and Gemm biases absorb the mean error of the rounded weights (eq. 32).
    Nodes named in `excluded` stay float, for the reason given there. Everything else stays float;
    `float_nodes` lists the candidates left float and why, and
    `left_float` counts those a choice (MEASURED_CHOICES) would have quantized.
    """

    def __init__(self, choices: DynamicChoices, input_means: dict[str, np.ndarray] | None = None,
                 excluded: dict[str, str] | None = None) -> None:
        super().__init__()
        self.excluded = excluded or {}
        self.choices = choices
        self.input_means = input_means or {}
        self.corrected: list[str] = []
        self.float_nodes: list[FloatNode] = []
        self.left_float = dict.fromkeys(MEASURED_CHOICES, 0)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self._graph, self._taken = graph, set()
        self._quantized: dict[str, tuple[ir.Value, ir.Value, ir.Value]] = {}
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx"):
                continue
            rewrite = {"MatMul": self._matmul, "Gemm": self._gemm, "Conv": self._conv, "LSTM": self._lstm}.get(
                node.op_type, self._weights_only if node.op_type in _RECURRENT_WITHOUT_KERNEL else None)
            if rewrite is None:
                continue
            reason = self.excluded.get(node.name) or rewrite(node)
            if reason is None:
                modified = True
            else:
                self.float_nodes.append(FloatNode(node.name, node.op_type, reason))
        if modified:
            if MICROSOFT not in model.opset_imports and any(n.domain == MICROSOFT for n in graph):
                model.opset_imports[MICROSOFT] = 1
            common_passes.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)

    # ---- the weight codes -------------------------------------------------------------------

    def _codes(self, array: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(codes, scale, zero point, rounding error) of a weight: symmetric, stored as int8 or as offset uint8."""
        codes, scale, zero_point, error = _rounded(array, self.choices.weights, axis)
        if self.choices.offset_codes:
            offset = (codes.astype(np.int16) + OFFSET).astype(np.uint8)
            return offset, scale, np.full(scale.shape, OFFSET, np.uint8), error
        return codes, scale, zero_point, error

    def _corrected_bias(self, node: ir.Node, x: ir.Value, bias: np.ndarray | None, error: np.ndarray,
                        group: int | None = None) -> np.ndarray | None:
        """The bias minus the mean output shift of a weight rounded by `error` (eq. 32); `bias` as it
        was when `x`'s mean is unknown. `group` None: a MatMul weight [K, N]; else a Conv's."""
        mean = self.input_means.get(x.name)
        if mean is None:
            return bias
        outputs = error.shape[1] if group is None else error.shape[0]
        shift = matmul_output_shift(error, mean) if group is None else conv_output_shift(error, mean, group)
        self.corrected.append(node.name)
        return ((bias if bias is not None else np.zeros(outputs, np.float32)) - shift).astype(np.float32)

    def _initializer(self, base: str, array: np.ndarray) -> ir.Value:
        return add_initializer(self._graph, unique_name(self._graph, base, self._taken), array)

    @property
    def _per_channel(self) -> bool:
        return self.choices.weights.granularity is Granularity.PER_CHANNEL

    # ---- run-time quantization ---------------------------------------------------------------

    def _quantized_at_run_time(self, value: ir.Value, before: ir.Node) -> tuple[ir.Value, ir.Value, ir.Value]:
        """(codes, scale, zero point) of `value` from one DynamicQuantizeLinear placed after its producer."""
        if value.name in self._quantized:
            return self._quantized[value.name]
        base = value.name
        outputs = [
            ir.Value(name=unique_name(self._graph, f"{base}_quantized", self._taken),
                     type=ir.TensorType(ir.DataType.UINT8), shape=value.shape),
            ir.Value(name=unique_name(self._graph, f"{base}_scale", self._taken), type=ir.TensorType(FLOAT),
                     shape=ir.Shape([])),
            ir.Value(name=unique_name(self._graph, f"{base}_zero_point", self._taken),
                     type=ir.TensorType(ir.DataType.UINT8), shape=ir.Shape([])),
        ]
        node = ir.node("DynamicQuantizeLinear", [value], outputs=outputs,
                       name=unique_name(self._graph, f"{base}_DynamicQuantizeLinear", self._taken))
        producer = value.producer()
        if producer is not None:
            self._graph.insert_after(producer, node)
        else:
            self._graph.insert_before(before, node)
        self._quantized[value.name] = tuple(outputs)
        return self._quantized[value.name]

    def _node(self, op: str, inputs: list, before: ir.Node, dtype: ir.DataType, attributes=None) -> ir.Value:
        base = before.name or before.op_type
        output = ir.Value(name=unique_name(self._graph, f"{base}_{op}", self._taken), type=ir.TensorType(dtype))
        node = ir.node(op, inputs, attributes, outputs=[output],
                       name=unique_name(self._graph, f"{base}_{op}", self._taken))
        self._graph.insert_before(before, node)
        return output

    def _weighted(self, node: ir.Node, op: str, x: ir.Value, codes: np.ndarray, scale: np.ndarray,
                  zero_point: np.ndarray, attributes=None) -> ir.Value:
        """`op` (MatMulInteger, ConvInteger) of `x` quantized at run time and integer weight `codes`
        (one zero point), scaled by s_x x `scale` (eq. 31)."""
        x_codes, x_scale, x_zero = self._quantized_at_run_time(x, node)
        w_codes = self._initializer(f"{node.name}_weight_quantized", codes)
        w_zero = self._initializer(f"{node.name}_weight_zero_point", zero_point.flat[0])
        w_scale = self._initializer(f"{node.name}_weight_scale", scale.astype(np.float32))
        combined = self._node("Mul", [x_scale, w_scale], node, FLOAT)
        return self._integer_product(node, op, [x_codes, w_codes, x_zero, w_zero], combined, attributes)

    def _integer_product(self, node: ir.Node, op: str, inputs: list, scale: ir.Value, attributes=None) -> ir.Value:
        """Integer `op` -> Cast to float -> Mul by `scale`, before `node` (ONNX Runtime fuses the chain)."""
        accumulator = self._node(op, inputs, node, ir.DataType.INT32, attributes)
        as_float = self._node("Cast", [accumulator], node, FLOAT, {"to": FLOAT})
        return self._node("Mul", [as_float, scale], node, FLOAT)

    def _finish(self, node: ir.Node, result: ir.Value) -> None:
        """Move `node`'s output (name, shape, readers, graph output) onto `result` and drop `node`."""
        self._take_over(node.outputs[0], result)
        self._graph.remove(node, safe=True)

    def _take_over(self, old: ir.Value, new: ir.Value) -> None:
        name, shape, value_type = old.name, old.shape, old.type
        old.name = unique_name(self._graph, f"{name}_float", self._taken)
        old.replace_all_uses_with(new, replace_graph_outputs=True)
        new.name, new.shape, new.type = name, shape, value_type

    # ---- the rules ---------------------------------------------------------------------------

    def _matmul(self, node: ir.Node) -> str | None:
        a, b = node.inputs
        weight = constant_array(b)
        if weight is None:
            if constant_array(a) is not None:
                return "constant left operand: kept float"
            if not self.choices.activation_products:
                self.left_float["activation_products"] += 1
                return "product of two run-time tensors: kept float"
            a_codes, a_scale, a_zero = self._quantized_at_run_time(a, node)
            b_codes, b_scale, b_zero = self._quantized_at_run_time(b, node)
            scale = self._node("Mul", [a_scale, b_scale], node, FLOAT)
            self._finish(node, self._integer_product(node, "MatMulInteger", [a_codes, b_codes, a_zero, b_zero],
                                                     scale))
            return None
        if weight.dtype != np.float32 or weight.ndim != 2:
            return f"constant operand of rank {weight.ndim}, {weight.dtype}: integer weights need a float 2-D matrix"
        self._finish(node, self._weight_product(node, a, weight)[0])
        return None

    def _weight_product(self, node: ir.Node, x: ir.Value, weight: np.ndarray,
                        alpha: float = 1.0) -> tuple[ir.Value, np.ndarray]:
        """alpha * x @ weight by eq. 31, and the weight's rounding error."""
        codes, scale, zero_point, error = self._codes(weight, 1 if self._per_channel else None)
        return self._weighted(node, "MatMulInteger", x, codes, scale * np.float32(alpha), zero_point), error

    def _gemm(self, node: ir.Node) -> str | None:
        if attribute(node, "transA", 0):
            return "Gemm with transA: kept float"
        weight = constant_array(node.inputs[1])
        if weight is None or weight.dtype != np.float32:
            return "Gemm whose B is not a float constant: kept float"
        if attribute(node, "transB", 0):
            weight = weight.T
        alpha = np.float32(attribute(node, "alpha", 1.0))
        result, error = self._weight_product(node, node.inputs[0], np.ascontiguousarray(weight), alpha)
        bias_input = node.inputs[2] if len(node.inputs) > 2 else None
        # The constant added after the product: beta * C when C is a constant, minus the mean shift of
        # alpha x @ W (alpha times that of x @ W); a C computed at run time is added on its own first.
        constant = self._corrected_bias(node, node.inputs[0], None, error)
        if constant is not None:
            constant *= alpha
        if bias_input is not None:
            beta = np.float32(attribute(node, "beta", 1.0))
            bias = constant_array(bias_input)
            if bias is not None:
                constant = bias * beta + (constant if constant is not None else 0)
            else:
                scaled = bias_input if beta == 1 else self._node(
                    "Mul", [bias_input, self._initializer(f"{node.name}_beta", beta)], node, FLOAT)
                result = self._node("Add", [result, scaled], node, FLOAT)
        if constant is not None:
            result = self._node("Add", [result, self._initializer(f"{node.name}_bias", constant.astype(np.float32))],
                                node, FLOAT)
        self._finish(node, result)
        return None

    def _conv(self, node: ir.Node) -> str | None:
        weight = constant_array(node.inputs[1])
        if weight is None or weight.dtype != np.float32:
            return "Conv whose weight is not a float constant: kept float"
        bias = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if len(node.inputs) > 2 and node.inputs[2] is not None and bias is None:
            return "Conv whose bias is computed at run time: kept float"
        group = int(attribute(node, "group", 1))
        if not self.choices.convolutions:
            self.left_float["convolutions"] += 1
            return self._weights_only(node, channel_axis=0)
        codes, scale, zero_point, error = self._codes(weight, 0 if self._per_channel else None)
        bias = self._corrected_bias(node, node.inputs[0], bias, error, group)
        spatial = (1,) * (weight.ndim - 2)
        result = self._weighted(node, "ConvInteger", node.inputs[0], codes, scale.reshape((-1, *spatial)),
                                zero_point, {name: attr.value for name, attr in node.attributes.items()})
        if bias is not None:
            bias_value = self._initializer(f"{node.name}_bias", bias.reshape((-1, *spatial)).astype(np.float32))
            result = self._node("Add", [result, bias_value], node, FLOAT)
        self._finish(node, result)
        return None

    def _lstm(self, node: ir.Node) -> str | None:
        inputs = list(node.inputs) + [None] * (8 - len(node.inputs))
        weights = [constant_array(inputs[1]), constant_array(inputs[2])]
        if any(w is None or w.dtype != np.float32 for w in weights):
            return "LSTM whose W or R is not a float constant: kept float"
        if attribute(node, "layout", 0):
            return "LSTM with layout = 1 (batch first): the integer LSTM takes sequence-first tensors; kept float"
        quantized = []
        for kind, array in zip(("W", "R"), weights):
            directions, rows, columns = array.shape  # rows: the 4 gates x hidden, one scale each
            codes, scale, zero_point, _ = self._codes(array.reshape(directions * rows, columns),
                                                   0 if self._per_channel else None)
            codes = codes.reshape(directions, rows, columns).transpose(0, 2, 1)
            scale = scale.reshape(directions, rows) if self._per_channel else np.full((directions,), scale)
            quantized += [
                self._initializer(f"{node.name}_{kind}_quantized", np.ascontiguousarray(codes)),
                self._initializer(f"{node.name}_{kind}_scale", scale.astype(np.float32)),
                self._initializer(f"{node.name}_{kind}_zero_point", np.full(scale.shape, zero_point.flat[0])),
            ]
        w, w_scale, w_zero, r, r_scale, r_zero = quantized
        integer_inputs = [inputs[0], w, r, *inputs[3:8], w_scale, w_zero, r_scale, r_zero]
        attributes = {name: attr.value for name, attr in node.attributes.items() if name != "layout"}
        name = unique_name(self._graph, f"{node.name}_integer", self._taken)
        lstm = ir.node("DynamicQuantizeLSTM", integer_inputs, attributes, domain=MICROSOFT,
                       num_outputs=len(node.outputs), name=name)
        self._graph.insert_before(node, lstm)
        for old, new in zip(node.outputs, lstm.outputs):
            self._take_over(old, new)
        self._graph.remove(node, safe=True)
        return None

    def _weights_only(self, node: ir.Node, channel_axis: int = 1) -> str:
        """Integer weights, float math: GRU / RNN (no integer kernel for them in ONNX Runtime), and Conv
        when its input is not quantized at run time (its bias corrected, eq. 32)."""
        fmt = dataclasses.replace(self.choices.weights, value_bits=None)
        axis = channel_axis if self._per_channel else None
        for index in (1, 2) if node.op_type != "Conv" else (1,):
            array = constant_array(node.inputs[index]) if len(node.inputs) > index else None
            if array is not None and array.dtype == np.float32:
                codes, scale, zero_point, error = _rounded(array, fmt, axis)
                node.replace_input_with(index, dequantized_codes(self._graph, node.inputs[index], codes, scale,
                                                                 zero_point, axis, node, self._taken))
        if node.op_type == "Conv":
            bias_input = node.inputs[2] if len(node.inputs) > 2 else None
            bias = constant_array(bias_input) if bias_input is not None else None
            corrected = self._corrected_bias(node, node.inputs[0], bias, error,
                                             int(attribute(node, "group", 1)))
            if corrected is not None and corrected is not bias:
                value = self._initializer(f"{node.name}_bias_corrected", corrected)
                if len(node.inputs) < 3:
                    node.resize_inputs(3)
                node.replace_input_with(2, value)
            return "input not quantized at run time: weights stored as int8, math in float"
        return f"no integer {node.op_type} kernel: weights stored as int8, math in float"

"""Each integer step of the reference backend as one C function with its constants (docs, section 10).

An emitter reads an `IntegerStep` (the kernel and its integer parameters, bound when the
reference session was made) and the shapes the step saw, and writes a loop nest that computes
the same codes: the same zero points, accumulators, multipliers, shifts and tables. Loops run
over the recorded shapes, so the C has no shape logic. A step no emitter takes is refused
with the op's name: the library is integer only, and a float fallback would not be.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx_ir as ir

from eightbit.backends.integer_ops import IntegerStep
from eightbit.codegen.text import c_array, c_type, per_channel
from eightbit.errors import InputError
from eightbit.kernels.add import LEFT_SHIFT
from eightbit.kernels.lookup import lookup
from eightbit.kernels.pool import DIVISION_BITS, global_average_pool
from eightbit.kernels.requantize import Requantization
from eightbit.kernels.windows import explicit_pads

RESHAPES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A code tensor as one run of the program saw it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def bytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class CStep:
    """One step as C: `body` reads x0, x1, ... (the `inputs`) and writes y (the `output`)."""

    prefix: str
    comment: str
    inputs: tuple[Tensor, ...]
    output: Tensor
    constants: str
    body: str
    flash_bytes: int


@dataclasses.dataclass(frozen=True)
class Constants:
    """Constant arrays of one step: their C text and their bytes."""

    text: str = ""
    flash_bytes: int = 0

    def plus(self, name: str, dtype: type | np.dtype, values: np.ndarray) -> Constants:
        """These constants and `values` as a `dtype` array called `name`."""
        values = np.asarray(values)
        return Constants(self.text + c_array(name, c_type(np.dtype(dtype)), values),
                         self.flash_bytes + values.size * np.dtype(dtype).itemsize)


def _shift_only(params: Requantization) -> bool:
    """Whether the multiplier is exactly 2^30 with no left shift: a rounding right shift by right + 1 alone."""
    return bool(np.all(params.multiplier == 2**30) and np.all(params.left_shift == 0))


def _requantization(constants: Constants, prefix: str, params: Requantization, channels: int) -> Constants:
    """The multipliers and shifts of `params`, one per channel (the shifts alone where they suffice)."""
    if np.any(params.multiplier >= 2**31):
        raise InputError(f"{prefix}: a multiplier does not fit int32; this is a bug, please report it")
    if _shift_only(params):
        return constants.plus(f"{prefix}_shift", np.int8, per_channel(params.right_shift + 1, channels))
    return (constants.plus(f"{prefix}_multiplier", np.int32, per_channel(params.multiplier, channels))
            .plus(f"{prefix}_right_shift", np.int8, per_channel(params.right_shift, channels))
            .plus(f"{prefix}_left_shift", np.int8, per_channel(params.left_shift, channels)))


def _apply_call(prefix: str, params: Requantization, acc: str, channel: str) -> str:
    """C for M * acc with `prefix`'s multipliers and shifts (eq. 10-11)."""
    if _shift_only(params):
        return f"eb_shift_apply({acc}, {prefix}_shift[{channel}])"
    return (f"eb_apply({acc}, {prefix}_multiplier[{channel}], {prefix}_right_shift[{channel}], "
            f"{prefix}_left_shift[{channel}])")


def _requantize_call(prefix: str, params: Requantization, acc: str, channel: str) -> str:
    """C for clamp(M * acc + zero_point, qmin, qmax)."""
    return f"eb_clamp({_apply_call(prefix, params, acc, channel)} + {params.zero_point}, {params.qmin}, {params.qmax})"


def _as_2d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(N, C, H, W) of a 1-D or 2-D NC... shape."""
    if len(shape) == 3:
        return shape[:2] + (1, shape[2])
    if len(shape) != 4:
        raise InputError(f"the C library takes 1-D and 2-D windows, not {len(shape) - 2}-D; export the model "
                         "with export-int instead")
    return shape


def _geometry_2d(values: tuple[int, ...], rank: int, fill: int) -> tuple[int, ...]:
    """Per-axis attributes (kernel, strides, dilations) of a 1-D window as 2-D."""
    return (fill,) + tuple(values) if rank == 1 else tuple(values)


def _pads_2d(pads: tuple[int, ...], rank: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right)."""
    return (0, pads[0], 0, pads[1]) if rank == 1 else tuple(pads)


def _window_loops(kernel, strides, dilations, pads, h: int, w: int, inner: str, padded: bool = False) -> str:
    """Loops over a window at (oh, ow); `inner` runs for each position inside the input (or, when
    `padded`, inside the explicitly padded input: `inner` then tells real positions from padding)."""
    top, left, bottom, right = pads
    low_h, high_h, low_w, high_w = (-top, h + bottom, -left, w + right) if padded else (0, h, 0, w)
    return (f"for (int kh = 0; kh < {kernel[0]}; ++kh) {{\n"
            f"    const int ih = oh * {strides[0]} + kh * {dilations[0]} - {top};\n"
            f"    if (ih < {low_h} || ih >= {high_h}) continue;\n"
            f"    for (int kw = 0; kw < {kernel[1]}; ++kw) {{\n"
            f"        const int iw = ow * {strides[1]} + kw * {dilations[1]} - {left};\n"
            f"        if (iw < {low_w} || iw >= {high_w}) continue;\n"
            f"        {inner}\n"
            f"    }}\n}}")


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line if line else line for line in text.splitlines())


def _weight_constants(prefix: str, weights: np.ndarray, zero_point: np.ndarray | int, channels: int) -> Constants:
    """A step's weight codes and their zero points, one per output channel."""
    return (Constants().plus(f"{prefix}_weights", weights.dtype, weights)
            .plus(f"{prefix}_weight_zero", np.int32, per_channel(zero_point, channels)))


def _bias(constants: Constants, prefix: str, bias: np.ndarray | None, channels: int) -> tuple[Constants, str]:
    """The bias array (or none) and the accumulator's first value for channel `m`."""
    if bias is None:
        return constants, "0"
    bias = np.asarray(bias, dtype=np.int64).reshape(-1)
    if np.any(np.abs(bias) >= 2**31):
        raise InputError(f"{prefix}: a bias does not fit int32; this is a bug, please report it")
    return constants.plus(f"{prefix}_bias", np.int32, per_channel(bias, channels)), f"{prefix}_bias[m]"


def conv(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor) -> CStep:
    """Conv: acc = bias[m] + sum (x - zp_x)(w - zp_w[m]) over the window and the group's channels (eq. 7)."""
    p = step.compute.keywords
    weights = np.asarray(p["weights"])
    rank = weights.ndim - 2
    x_shape = _as_2d(inputs[0].shape)
    n, channels, h, w = x_shape
    _, m_count, oh, ow = _as_2d(output.shape)
    kernel = _geometry_2d(weights.shape[2:], rank, 1)
    strides, dilations = _geometry_2d(p["strides"], rank, 1), _geometry_2d(p["dilations"], rank, 1)
    pads = _pads_2d(explicit_pads(p["auto_pad"], inputs[0].shape[2:], weights.shape[2:], p["strides"],
                                  p["dilations"], p["pads"]), rank)
    per_group, group_outputs = weights.shape[1], m_count // p["group"]
    constants = _weight_constants(prefix, weights, p["w_zero_point"], m_count)
    constants, first = _bias(constants, prefix, p["bias"], m_count)
    constants = _requantization(constants, prefix, p["output"], m_count)
    product = (f"acc += ((int32_t)x0[((n * {channels} + c0 + c) * {h} + ih) * {w} + iw] - {p['x_zero_point']}) * "
               f"((int32_t){prefix}_weights[((m * {per_group} + c) * {kernel[0]} + kh) * {kernel[1]} + kw] - "
               f"{prefix}_weight_zero[m]);")
    window = _window_loops(kernel, strides, dilations, pads, h, w, product)
    store = f"y[((n * {m_count} + m) * {oh} + oh) * {ow} + ow] = ({c_type(output.dtype)})" + \
        _requantize_call(prefix, p["output"], "acc", "m") + ";"
    body = (f"for (int n = 0; n < {n}; ++n)\nfor (int m = 0; m < {m_count}; ++m) {{\n"
            f"    const int c0 = (m / {group_outputs}) * {per_group};\n"
            f"    for (int oh = 0; oh < {oh}; ++oh)\n    for (int ow = 0; ow < {ow}; ++ow) {{\n"
            f"        int32_t acc = {first};\n"
            f"        for (int c = 0; c < {per_group}; ++c) {{\n{_indent(window, 12)}\n        }}\n"
            f"        {store}\n    }}\n}}")
    return CStep(prefix, f"Conv {step.node}", inputs, output, constants.text, body, constants.flash_bytes)


def _gemm_loops(prefix: str, a: Tensor, weights: np.ndarray, trans_b: bool, a_zero: int, store: str) -> str:
    """acc[n][m] = bias[m] + sum_k (a[n][k] - zp_a)(w[k][m] - zp_w[m]), then `store`."""
    rows, depth = a.shape
    columns = weights.shape[0] if trans_b else weights.shape[1]
    w_index = f"m * {depth} + k" if trans_b else f"k * {columns} + m"
    return (f"for (int n = 0; n < {rows}; ++n)\nfor (int m = 0; m < {columns}; ++m) {{\n"
            f"    int32_t acc = ACC_FIRST;\n"
            f"    for (int k = 0; k < {depth}; ++k)\n"
            f"        acc += ((int32_t)x0[n * {depth} + k] - {a_zero}) * "
            f"((int32_t){prefix}_weights[{w_index}] - {prefix}_weight_zero[m]);\n"
            f"    {store}\n}}")


def gemm(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor) -> CStep:
    """Gemm with constant weights: the matrix product's accumulators, requantized per output column."""
    p = step.compute.keywords
    if len(inputs[0].shape) != 2:
        raise InputError(f"{step.node}: Gemm takes a 2-D input, this one is {inputs[0].shape}")
    weights = np.asarray(p["weights"])
    columns = output.shape[1]
    constants = _weight_constants(prefix, weights, p["w_zero_point"], columns)
    constants, first = _bias(constants, prefix, p["bias"], columns)
    constants = _requantization(constants, prefix, p["output"], columns)
    store = f"y[n * {columns} + m] = ({c_type(output.dtype)})" + _requantize_call(prefix, p["output"], "acc", "m") + ";"
    body = _gemm_loops(prefix, inputs[0], weights, p["trans_b"], p["a_zero_point"], store).replace("ACC_FIRST", first)
    return CStep(prefix, f"Gemm {step.node}", inputs, output, constants.text, body, constants.flash_bytes)


def matmul(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor,
           aux: tuple[np.ndarray, ...]) -> CStep:
    """MatMul by a constant 2-D matrix (a linear layer): the rows of the input, as many as its leading axes hold,
    each times the matrix, requantized per output column."""
    p = step.compute.keywords
    if len(inputs) != 1 or len(aux) != 1 or np.asarray(aux[0]).ndim != 2:
        raise InputError(f"{step.node}: the C library takes MatMul by a constant 2-D matrix only; export the model "
                         "with export-int instead")
    weights = np.asarray(aux[0])
    depth, columns = weights.shape
    rows = Tensor(inputs[0].name, (inputs[0].size // depth, depth), inputs[0].dtype)
    constants = _weight_constants(prefix, weights, p["b_zero_point"], columns)
    constants = _requantization(constants, prefix, p["output"], columns)
    store = f"y[n * {columns} + m] = ({c_type(output.dtype)})" + _requantize_call(prefix, p["output"], "acc", "m") + ";"
    body = _gemm_loops(prefix, rows, weights, False, p["a_zero_point"], store).replace("ACC_FIRST", "0")
    return CStep(prefix, f"MatMul {step.node}", inputs, output, constants.text, body, constants.flash_bytes)


def accumulator_gemm(node: ir.Node, prefix: str, a: Tensor, a_zero: int, weights: np.ndarray, w_zero: np.ndarray,
                     bias: np.ndarray | None, trans_b: bool, output: Tensor) -> CStep:
    """An integer Gemm or MatMul (`a` as rows, `weights` constant) whose output is its int32 accumulators: the
    form of a product whose output the model keeps in float (eq. 7c); the caller scales them to float."""
    columns = weights.shape[0] if trans_b else weights.shape[1]
    constants = _weight_constants(prefix, weights, w_zero, columns)
    constants, first = _bias(constants, prefix, bias, columns)
    body = _gemm_loops(prefix, a, weights, trans_b, a_zero, f"y[n * {columns} + m] = acc;").replace("ACC_FIRST", first)
    return CStep(prefix, f"{node.op_type} {node.name} (int32 accumulators out)", (a,), output, constants.text, body,
                 constants.flash_bytes)


def _table(constants: Constants, prefix: str, table: np.ndarray | None, dtype: np.dtype) -> Constants:
    return constants if table is None else constants.plus(f"{prefix}_table", dtype, table)


def _moved(prefix: str, table: np.ndarray | None, qmin: int, value: str) -> str:
    """A code moved to the output: as it is, or through the step's rescaling table."""
    return value if table is None else f"{prefix}_table[{value} - ({qmin})]"


def _pool_frame(inputs: tuple[Tensor, ...], output: Tensor, p: dict) -> tuple:
    """(x shape, output shape, kernel, strides, dilations, pads) of a pooling step, as 2-D."""
    rank = len(p["kernel"])
    pads = _pads_2d(explicit_pads(p["auto_pad"], inputs[0].shape[2:], p["kernel"], p["strides"], p["dilations"],
                                  p["pads"]), rank)
    return (_as_2d(inputs[0].shape), _as_2d(output.shape), _geometry_2d(p["kernel"], rank, 1),
            _geometry_2d(p["strides"], rank, 1), _geometry_2d(p["dilations"], rank, 1), pads)


def _pool_store(channels: int, out_shape: tuple[int, ...], output: Tensor, value: str) -> str:
    """The statement that writes a pooling step's output at (n, c, oh, ow)."""
    return (f"y[((n * {channels} + c) * {out_shape[2]} + oh) * {out_shape[3]} + ow] = "
            f"({c_type(output.dtype)}){value};")


def _over_outputs(shape: tuple[int, ...], inner: str) -> str:
    n, channels, oh, ow = shape
    return (f"for (int n = 0; n < {n}; ++n)\nfor (int c = 0; c < {channels}; ++c)\n"
            f"for (int oh = 0; oh < {oh}; ++oh)\nfor (int ow = 0; ow < {ow}; ++ow) {{\n{_indent(inner, 4)}\n}}")


def max_pool(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor) -> CStep:
    """MaxPool: the largest code under the window; padding never wins."""
    p = step.compute.keywords
    (_, channels, h, w), out_shape, kernel, strides, dilations, pads = _pool_frame(inputs, output, p)
    constants = _table(Constants(), prefix, p["rescale"], output.dtype)
    read = f"const int32_t v = x0[((n * {channels} + c) * {h} + ih) * {w} + iw]; if (v > best) best = v;"
    inner = (f"int32_t best = {p['qmin']};\n{_window_loops(kernel, strides, dilations, pads, h, w, read)}\n"
             + _pool_store(channels, out_shape, output, _moved(prefix, p["rescale"], p["qmin"], "best")))
    return CStep(prefix, f"MaxPool {step.node}", inputs, output, constants.text, _over_outputs(out_shape, inner),
                 constants.flash_bytes)


def average_pool(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor) -> CStep:
    """AveragePool: round(2^16 sum (x - zp) / count), requantized; padding counts when count_include_pad."""
    p = step.compute.keywords
    (_, channels, h, w), out_shape, kernel, strides, dilations, pads = _pool_frame(inputs, output, p)
    constants = _requantization(Constants(), prefix, p["output"], 1)
    read = (f"if (ih >= 0 && ih < {h} && iw >= 0 && iw < {w}) "
            f"total += (int64_t)x0[((n * {channels} + c) * {h} + ih) * {w} + iw] - {p['zero_point']};\n"
            f"        ++count;")
    window = _window_loops(kernel, strides, dilations, pads, h, w, read, padded=p["count_include_pad"])
    scaled = f"eb_round_divide(total * {2**DIVISION_BITS}, count > 0 ? count : 1)"
    inner = (f"int64_t total = 0;\nint64_t count = 0;\n{window}\n"
             + _pool_store(channels, out_shape, output, _requantize_call(prefix, p["output"], scaled, "0")))
    return CStep(prefix, f"AveragePool {step.node}", inputs, output, constants.text, _over_outputs(out_shape, inner),
                 constants.flash_bytes)


def global_average(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor) -> CStep:
    """GlobalAveragePool: round(2^16 sum (x - zp) / positions), requantized."""
    p = step.compute.keywords
    n, channels = inputs[0].shape[:2]
    positions = math.prod(inputs[0].shape[2:])
    constants = _requantization(Constants(), prefix, p["output"], 1)
    scaled = f"eb_round_divide(total * {2**DIVISION_BITS}, {positions})"
    body = (f"for (int i = 0; i < {n * channels}; ++i) {{\n    int64_t total = 0;\n"
            f"    for (int j = 0; j < {positions}; ++j) total += (int64_t)x0[i * {positions} + j] - "
            f"{p['zero_point']};\n"
            f"    y[i] = ({c_type(output.dtype)}){_requantize_call(prefix, p['output'], scaled, '0')};\n}}")
    return CStep(prefix, f"GlobalAveragePool {step.node}", inputs, output, constants.text, body,
                 constants.flash_bytes)


def table(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor) -> CStep:
    """An elementwise op as its table of output codes (Relu, Clip, Sigmoid, ...)."""
    p = step.compute.keywords
    constants = _table(Constants(), prefix, p["table"], output.dtype)
    body = (f"for (int i = 0; i < {output.size}; ++i) "
            f"y[i] = {_moved(prefix, p['table'], p['qmin'], '(int32_t)x0[i]')};")
    return CStep(prefix, f"{step.op_type} {step.node} (table)", inputs, output, constants.text, body,
                 constants.flash_bytes)


def _offset(out_shape: tuple[int, ...], strides: tuple[int, ...]) -> str:
    """The input offset of output element i, where a step along output axis d moves strides[d] in the input."""
    terms = []
    for axis, stride in enumerate(strides):
        if stride == 0 or out_shape[axis] == 1:
            continue
        inner = math.prod(out_shape[axis + 1:])
        position = "i" if axis == 0 and inner == 1 else f"i / {inner}" if axis == 0 else \
            f"i % {out_shape[axis]}" if inner == 1 else f"(i / {inner}) % {out_shape[axis]}"
        terms.append(f"({position}) * {stride}" if stride != 1 else f"({position})")
    return " + ".join(terms) or "0"


def _broadcast_offset(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> str:
    """The offset of output element i in an input broadcast to `out_shape` (numpy's rules)."""
    if shape == out_shape:
        return "i"
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides = tuple(0 if padded[axis] == 1 else math.prod(padded[axis + 1:]) for axis in range(len(padded)))
    return _offset(out_shape, strides)


def add(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor) -> CStep:
    """Add: each input rescaled at 2^20 to a common scale, summed, requantized; numpy broadcasting."""
    params = step.compute.keywords["params"]
    constants = Constants()
    terms = []
    for index, (label, zero, rescale) in enumerate((("a", params.a_zero_point, params.a_rescale),
                                                    ("b", params.b_zero_point, params.b_rescale))):
        constants = _requantization(constants, f"{prefix}_{label}", rescale, 1)
        read = f"x{index}[{_broadcast_offset(inputs[index].shape, output.shape)}]"
        terms.append(_apply_call(f"{prefix}_{label}", rescale, f"((int64_t){read} - {zero}) * {2**LEFT_SHIFT}", "0"))
    constants = _requantization(constants, prefix, params.output, 1)
    total = " +\n        ".join(terms)
    body = (f"for (int i = 0; i < {output.size}; ++i)\n"
            f"    y[i] = ({c_type(output.dtype)}){_requantize_call(prefix, params.output, total, '0')};")
    return CStep(prefix, f"Add {step.node}", inputs, output, constants.text, body, constants.flash_bytes)


def mul(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor) -> CStep:
    """Mul: (a - zp_a)(b - zp_b), requantized; numpy broadcasting."""
    p = step.compute.keywords
    constants = _requantization(Constants(), prefix, p["output"], 1)
    a = f"((int64_t)x0[{_broadcast_offset(inputs[0].shape, output.shape)}] - {p['a_zero_point']})"
    b = f"((int64_t)x1[{_broadcast_offset(inputs[1].shape, output.shape)}] - {p['b_zero_point']})"
    body = (f"for (int i = 0; i < {output.size}; ++i)\n"
            f"    y[i] = ({c_type(output.dtype)}){_requantize_call(prefix, p['output'], f'{a} * {b}', '0')};")
    return CStep(prefix, f"Mul {step.node}", inputs, output, constants.text, body, constants.flash_bytes)


def concat(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor) -> CStep:
    """Concat: each input's blocks copied to its place on the axis, through its table where it is on
    another grid."""
    p = step.compute.keywords
    axis = p["axis"] % len(output.shape)
    outer, inner = math.prod(output.shape[:axis]), math.prod(output.shape[axis:])
    constants, lines, offset = Constants(), [], 0
    for index, (tensor, table_values) in enumerate(zip(inputs, p["tables"])):
        part = math.prod(tensor.shape[axis:])
        constants = _table(constants, f"{prefix}_{index}", table_values, output.dtype)
        value = _moved(f"{prefix}_{index}", table_values, p["qmin"], f"(int32_t)x{index}[o * {part} + j]")
        lines.append(f"    for (int j = 0; j < {part}; ++j) y[o * {inner} + {offset} + j] = "
                     f"({c_type(output.dtype)}){value};")
        offset += part
    body = f"for (int o = 0; o < {outer}; ++o) {{\n" + "\n".join(lines) + "\n}"
    return CStep(prefix, f"Concat {step.node}", inputs, output, constants.text, body, constants.flash_bytes)


def movement(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor) -> CStep:
    """Reshapes (codes keep their order) and Transpose, through the rescaling table where there is one."""
    p = step.compute.keywords
    op = p["op_type"]
    data = inputs[:1]
    constants = _table(Constants(), prefix, p["rescale"], output.dtype)
    if op in RESHAPES:
        source = "i"
    elif op == "Transpose":
        shape = data[0].shape
        perm = dict(p["attributes"]).get("perm") or tuple(reversed(range(len(shape))))
        source = _offset(output.shape, tuple(math.prod(shape[axis + 1:]) for axis in perm))
    else:
        raise InputError(f"{step.node}: the C library has no {op} yet; export the model with export-int instead")
    value = _moved(prefix, p["rescale"], p["qmin"], f"(int32_t)x0[{source}]")
    body = f"for (int i = 0; i < {output.size}; ++i)\n    y[i] = ({c_type(output.dtype)}){value};"
    return CStep(prefix, f"{op} {step.node}", data, output, constants.text, body, constants.flash_bytes)


def _source_positions(step: IntegerStep, shape: tuple[int, ...], aux: tuple[np.ndarray, ...]) -> np.ndarray:
    """For each output element of a data-movement step, 1 + the flat index of the input element it copies, or 0
    where it is padding: the step's own kernel run once, offline, on the positions instead of on codes."""
    positions = np.arange(1, math.prod(shape) + 1, dtype=np.int64).reshape(shape)
    keywords = {**step.compute.keywords, "rescale": None}
    if "zero_point" in keywords:
        keywords["zero_point"] = 0  # constant padding: position 0
    return np.asarray(step.compute.func(positions, *aux, **keywords)).reshape(-1)


def gathered(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor,
             aux: tuple[np.ndarray, ...]) -> CStep:
    """Slice, Pad, Gather (constant indices) and nearest Resize: each output code copied from the input position a
    table made offline says (padding: the input's zero point), through the rescaling table where there is one."""
    if len(inputs) != 1:
        raise InputError(f"{step.node}: the C library takes {step.op_type} with constant indices and shapes only; "
                         "export the model with export-int instead")
    p = step.compute.keywords
    sources = _source_positions(step, inputs[0].shape, aux)
    index_type = np.int16 if sources.max() < 2**15 else np.int32
    constants = _table(Constants().plus(f"{prefix}_source", index_type, sources), prefix, p["rescale"], output.dtype)
    code = f"({prefix}_source[i] > 0 ? (int32_t)x0[{prefix}_source[i] - 1] : {p.get('zero_point', 0)})"
    body = (f"for (int i = 0; i < {output.size}; ++i)\n"
            f"    y[i] = ({c_type(output.dtype)}){_moved(prefix, p['rescale'], p['qmin'], code)};")
    return CStep(prefix, f"{step.op_type} {step.node} (positions)", inputs, output, constants.text, body,
                 constants.flash_bytes)


GATHERED = ("Slice", "Pad", "Gather", "Resize")


def emit(step: IntegerStep, prefix: str, inputs: tuple[Tensor, ...], output: Tensor,
         aux: tuple[np.ndarray, ...] = ()) -> CStep:
    """The C of one integer step (`aux`: its constant shape operands), or InputError naming an op the library has
    no loop for."""
    if step.op_type in GATHERED:
        return gathered(step, prefix, inputs, output, aux)
    if step.op_type == "MatMul":
        return matmul(step, prefix, inputs, output, aux)
    if step.compute.func is lookup:
        return table(step, prefix, inputs, output)
    if step.compute.func is global_average_pool:
        return global_average(step, prefix, inputs, output)
    emitter = {"Conv": conv, "Gemm": gemm, "MaxPool": max_pool, "AveragePool": average_pool, "Add": add, "Mul": mul,
               "Concat": concat, "Transpose": movement, **{op: movement for op in RESHAPES}}.get(step.op_type)
    if emitter is None:
        raise InputError(f"{step.node}: the C library has no integer {step.op_type} yet; export the model with "
                         "export-int instead, or keep that node float and run it with ONNX Runtime")
    return emitter(step, prefix, inputs, output)

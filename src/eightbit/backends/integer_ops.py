"""Offline half of the reference backend: each DQ -> op -> Q group of a QDQ model as an integer step.

For every op the converter emits, a `lower_*` function reads the group's scales and zero
points (floats, here and only here), turns them into integer parameters with the kernels'
`prepare_*` functions, and returns the kernel call as a `functools.partial` whose bound
arguments are all integers. A group that does not match (per-channel activations, an
attribute the kernels do not implement) returns None and runs in float instead.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from eightbit.config import IntegerFormat
from eightbit.ir.graph import attribute, constant_array
from eightbit.kernels import add as add_kernel
from eightbit.kernels import concat as concat_kernel
from eightbit.kernels import conv as conv_kernel
from eightbit.kernels import conv_transpose as conv_transpose_kernel
from eightbit.kernels import lookup as lookup_kernel
from eightbit.kernels import matmul as matmul_kernel
from eightbit.kernels import movement
from eightbit.kernels import mul as mul_kernel
from eightbit.kernels import pool as pool_kernel
from eightbit.kernels import resize as resize_kernel
from eightbit.kernels.requantize import Requantization, prepare_requantization, requantize
from eightbit.kernels.windows import explicit_pads
from eightbit.quant import dequantize
from eightbit.quant.saturation import SATURATING_ACTIVATIONS, saturating_activation


@dataclasses.dataclass(frozen=True)
class Quantized:
    """A tensor as integer codes: where its codes are (an environment name) and their grid."""

    name: str
    scale: np.ndarray  # float32, one per tensor or per channel along `axis`
    zero_point: np.ndarray
    axis: int
    fmt: IntegerFormat

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1

    @property
    def channel_axis(self) -> int | None:
        """The axis the scales run along, or None for one scale per tensor."""
        return None if self.per_tensor else self.axis

    @property
    def s(self) -> float:
        return float(self.scale.reshape(-1)[0])

    @property
    def zp(self) -> int:
        return int(self.zero_point.reshape(-1)[0])


@dataclasses.dataclass
class IntegerStep:
    """One integer op: codes in (and integer shape inputs), codes out."""

    node: str
    op_type: str
    inputs: list[str]
    output: str
    compute: functools.partial
    dtype: np.dtype
    # Largest |accumulator| any input can produce (products and bias), for ops that accumulate.
    accumulator_bound: int | None = None

    @property
    def fits_int32(self) -> bool:
        return self.accumulator_bound is None or self.accumulator_bound < 2**31

    def run(self, arrays: list[np.ndarray]) -> np.ndarray:
        return np.asarray(self.compute(*arrays)).astype(self.dtype)


class Group:
    """A node whose data inputs come from DequantizeLinear and whose output feeds one QuantizeLinear.

    `inputs[i]` describes input i when a DequantizeLinear produces it (None otherwise);
    `codes[i]` holds its integer array when those codes are a constant (weights, biases).
    """

    def __init__(self, node: ir.Node, inputs: list[Quantized | None], codes: dict[int, np.ndarray],
                 output: Quantized) -> None:
        self.node = node
        self.inputs = inputs
        self.codes = codes
        self.output = output

    def constant_codes(self, index: int) -> np.ndarray | None:
        return self.codes.get(index)

    def attribute(self, name: str, default):
        return attribute(self.node, name, default)

    def constant(self, index: int) -> np.ndarray | None:
        if index >= len(self.node.inputs) or self.node.inputs[index] is None:
            return None
        return constant_array(self.node.inputs[index])

    def aux_name(self, index: int) -> str | None:
        """Environment name of a non-quantized input (shapes, axes), or None if omitted."""
        if index >= len(self.node.inputs) or self.node.inputs[index] is None or not self.node.inputs[index].name:
            return None
        return self.node.inputs[index].name

    def step(self, compute: Callable, inputs: list[str], bound: int | None = None, **params) -> IntegerStep:
        return IntegerStep(self.node.name or self.output.name, self.node.op_type, inputs, self.output.name,
                           functools.partial(compute, **params), self.output.fmt.numpy_dtype, bound)


def _accumulator_bound(x: Quantized, weights: np.ndarray, w_zero: np.ndarray, depth: int,
                       bias: np.ndarray | None) -> int:
    """max |acc| = depth * max|x - zp_x| * max|w - zp_w| + max|bias|: int32 suffices below 2^31."""
    x_span = max(x.zp - x.fmt.qmin, x.fmt.qmax - x.zp)
    w_span = int(np.abs(weights.astype(np.int64)).max(initial=0)) + int(np.abs(np.asarray(w_zero, np.int64)).max())
    return depth * x_span * w_span + (int(np.abs(bias).max(initial=0)) if bias is not None else 0)


def _output_requantization(real: np.ndarray | float, out: Quantized, channel_axis: int | None = None,
                           ndim: int = 0) -> Requantization:
    return prepare_requantization(real, out.zp, out.fmt.qmin, out.fmt.qmax, channel_axis, ndim)


def _integer_bias(group: Group, index: int, accumulator_scale: np.ndarray) -> np.ndarray | None:
    """Bias codes at the accumulator's scale s_in * s_w (eq. 7); re-derived offline if stored otherwise."""
    if index >= len(group.node.inputs) or group.node.inputs[index] is None:
        return None
    quantized = group.inputs[index]
    if quantized is not None and quantized.fmt.bits == 32 and np.allclose(
            np.broadcast_to(quantized.scale, accumulator_scale.shape), accumulator_scale, rtol=1e-6, atol=0):
        return group.constant_codes(index)
    real = (dequantize(group.constant_codes(index), quantized.scale, quantized.zero_point, quantized.axis)
            if quantized is not None else group.constant(index))
    if real is None:
        return None
    return np.rint(real.astype(np.float64) / accumulator_scale.astype(np.float64)).astype(np.int64)


def _weights(group: Group, index: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(codes, zero point per output channel, scale per output channel) of a constant weight."""
    weight = group.inputs[index]
    codes = group.constant_codes(index)
    if weight is None or codes is None:
        return None
    scale = np.broadcast_to(weight.scale.reshape(-1), (channels,)) if weight.scale.size in (1, channels) else None
    if scale is None:
        return None
    zero = np.broadcast_to(weight.zero_point.reshape(-1).astype(np.int64), (channels,))
    return codes, zero, scale.astype(np.float64)


# -- convolution and matrix products ------------------------------------------------------------


def _conv_step(x, *, x_zero_point, weights, w_zero_point, bias, strides, pads, auto_pad, dilations, group,
               output):
    kernel = weights.shape[2:]
    pads = explicit_pads(auto_pad, x.shape[2:], kernel, strides, dilations, pads)
    acc = conv_kernel.conv(x, x_zero_point, weights, w_zero_point, bias, strides, pads, dilations, group)
    return requantize(acc, output)


def lower_conv(group: Group) -> IntegerStep | None:
    x = group.inputs[0]
    if x is None or not x.per_tensor:
        return None
    codes = group.constant_codes(1)
    if codes is None:
        return None
    weights = _weights(group, 1, codes.shape[0])
    if weights is None or (group.inputs[1].axis != 0 and not group.inputs[1].per_tensor):
        return None
    codes, w_zero, w_scale = weights
    rank = codes.ndim - 2
    accumulator_scale = np.float32(x.s) * w_scale.astype(np.float32)
    bias = _integer_bias(group, 2, accumulator_scale.astype(np.float64))
    return group.step(
        _conv_step, [x.name], _accumulator_bound(x, codes, w_zero, int(np.prod(codes.shape[1:])), bias),
        x_zero_point=x.zp, weights=codes, w_zero_point=w_zero, bias=bias,
        strides=tuple(group.attribute("strides", (1,) * rank)), pads=tuple(group.attribute("pads", (0,) * 2 * rank)),
        auto_pad=group.attribute("auto_pad", "NOTSET"), dilations=tuple(group.attribute("dilations", (1,) * rank)),
        group=int(group.attribute("group", 1)),
        output=_output_requantization(x.s * w_scale / group.output.s, group.output, 1, rank + 2),
    )


def _conv_transpose_step(x, *, x_zero_point, weights, w_zero_point, bias, strides, pads, dilations,
                         output_padding, output_shape, auto_pad, group, output):
    rank = weights.ndim - 2
    kernel = weights.shape[2:]
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(rank):
            target = output_shape[i] if output_shape is not None else x.shape[2 + i] * strides[i]
            total = strides[i] * (x.shape[2 + i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1 - target
            first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            begin.append(first)
            end.append(total - first)
        pads = tuple(begin + end)
    acc = conv_transpose_kernel.conv_transpose(x, x_zero_point, weights, w_zero_point, bias, strides, pads,
                                               dilations, output_padding, group)
    return requantize(acc, output)


def lower_conv_transpose(group: Group) -> IntegerStep | None:
    x = group.inputs[0]
    codes = group.constant_codes(1)
    if x is None or not x.per_tensor or codes is None:
        return None
    groups = int(group.attribute("group", 1))
    channels = codes.shape[1] * groups
    if not group.inputs[1].per_tensor and (group.inputs[1].axis != 1 or groups != 1):
        return None
    weights = _weights(group, 1, channels)
    if weights is None:
        return None
    codes, w_zero, w_scale = weights
    rank = codes.ndim - 2
    output_shape = group.attribute("output_shape", None)
    bias = _integer_bias(group, 2, (np.float32(x.s) * w_scale.astype(np.float32)).astype(np.float64))
    # Each output sums at most C/group inputs times the kernel positions that overlap it.
    depth = codes.shape[0] // groups * int(np.prod(codes.shape[2:]))
    return group.step(
        _conv_transpose_step, [x.name], _accumulator_bound(x, codes, w_zero, depth, bias),
        x_zero_point=x.zp, weights=codes, w_zero_point=w_zero, bias=bias,
        strides=tuple(group.attribute("strides", (1,) * rank)), pads=tuple(group.attribute("pads", (0,) * 2 * rank)),
        dilations=tuple(group.attribute("dilations", (1,) * rank)),
        output_padding=tuple(group.attribute("output_padding", (0,) * rank)),
        output_shape=tuple(output_shape[-rank:]) if output_shape else None,
        auto_pad=group.attribute("auto_pad", "NOTSET"), group=groups,
        output=_output_requantization(x.s * w_scale / group.output.s, group.output, 1, rank + 2),
    )


def _matmul_step(a, b, *, a_zero_point, b_zero_point, output):
    return requantize(matmul_kernel.matmul(a, a_zero_point, b, b_zero_point), output)


def lower_matmul(group: Group) -> IntegerStep | None:
    a, b = group.inputs[0], group.inputs[1]
    if a is None or b is None or not a.per_tensor:
        return None
    b_codes = group.constant_codes(1)
    per_column = b.scale.size > 1
    if per_column and (b_codes is None or b.axis not in (-1, b_codes.ndim - 1)):
        return None
    real = a.s * b.scale.reshape(-1).astype(np.float64) / group.output.s
    # Depth of the sum: b's rows (its only axis when it is a vector), if the shape is known.
    shape = b_codes.shape if b_codes is not None else group.node.inputs[1].shape
    depth = None if shape is None or len(shape) == 0 else shape[-2] if len(shape) >= 2 else shape[0]
    if b_codes is not None:
        bound = _accumulator_bound(a, b_codes, b.zero_point, int(depth), None)
    elif isinstance(depth, int):  # an activation spans at most its zero point's distance to a range end
        bound = _accumulator_bound(a, np.array([max(b.zp - b.fmt.qmin, b.fmt.qmax - b.zp)]), np.zeros(1), depth, None)
    else:
        bound = None
    return group.step(_matmul_step, [a.name, b.name], bound, a_zero_point=a.zp,
                      b_zero_point=b.zero_point.reshape(-1).astype(np.int64) if per_column else b.zp,
                      output=_output_requantization(real, group.output, 0 if per_column else None, 1))


def _gemm_step(a, *, a_zero_point, weights, w_zero_point, bias, trans_b, output):
    return requantize(matmul_kernel.gemm(a, a_zero_point, weights, w_zero_point, bias, trans_b), output)


def lower_gemm(group: Group) -> IntegerStep | None:
    a = group.inputs[0]
    codes = group.constant_codes(1)
    if a is None or not a.per_tensor or codes is None or group.attribute("transA", 0):
        return None
    trans_b = bool(group.attribute("transB", 0))
    columns = codes.shape[0] if trans_b else codes.shape[1]
    if not group.inputs[1].per_tensor and group.inputs[1].axis != (0 if trans_b else 1):
        return None
    weights = _weights(group, 1, columns)
    if weights is None:
        return None
    codes, w_zero, w_scale = weights
    alpha, beta = float(group.attribute("alpha", 1.0)), float(group.attribute("beta", 1.0))
    accumulator_scale = (np.float32(a.s) * w_scale.astype(np.float32)).astype(np.float64)
    bias = _integer_bias(group, 2, accumulator_scale * alpha / beta) if beta != 0 else None
    bound = _accumulator_bound(a, codes, w_zero, codes.shape[1] if trans_b else codes.shape[0], bias)
    return group.step(_gemm_step, [a.name], bound, a_zero_point=a.zp, weights=codes, w_zero_point=w_zero, bias=bias,
                      trans_b=trans_b, output=_output_requantization(alpha * a.s * w_scale / group.output.s,
                                                                     group.output, 0, 1))


# -- elementwise ----------------------------------------------------------------------------------


def lower_add(group: Group) -> IntegerStep | None:
    a, b = group.inputs[0], group.inputs[1]
    if a is None or b is None or not (a.per_tensor and b.per_tensor):
        return None
    out = group.output
    params = add_kernel.prepare_add(a.s, a.zp, b.s, b.zp, out.s, out.zp, out.fmt.qmin, out.fmt.qmax)
    return group.step(add_kernel.add, [a.name, b.name], params=params)


def lower_mul(group: Group) -> IntegerStep | None:
    a, b = group.inputs[0], group.inputs[1]
    if a is None or b is None or not (a.per_tensor and b.per_tensor):
        return None
    return group.step(mul_kernel.mul, [a.name, b.name], a_zero_point=a.zp, b_zero_point=b.zp,
                      output=_output_requantization(a.s * b.s / group.output.s, group.output))


def _rescale_table(x: Quantized, out: Quantized) -> np.ndarray | None:
    """None when output codes are input codes; else the identity's table onto the output grid."""
    if x.s == out.s and x.zp == out.zp and x.fmt == out.fmt:
        return None
    return lookup_kernel.prepare_table(lambda v: v, x.s, x.zp, x.fmt, out.s, out.zp, out.fmt)


def _moved(result: np.ndarray, rescale: np.ndarray | None, qmin: int) -> np.ndarray:
    return result if rescale is None else lookup_kernel.lookup(result, rescale, qmin)


def _table(group: Group, function: Callable[[np.ndarray], np.ndarray]) -> IntegerStep | None:
    x = group.inputs[0]
    if x is None or not x.per_tensor or x.fmt.bits != 8:
        return None
    out = group.output
    table = lookup_kernel.prepare_table(function, x.s, x.zp, x.fmt, out.s, out.zp, out.fmt)
    return group.step(lookup_kernel.lookup, [x.name], table=table, qmin=x.fmt.qmin)


def lower_unary(group: Group) -> IntegerStep | None:
    """Sigmoid, HardSigmoid, HardSwish, LeakyRelu, Relu, Clip: a 256-entry table (ONNX formulas, float32)."""
    op = group.node.op_type
    zero = np.float32(0)
    if op in SATURATING_ACTIVATIONS:
        function = saturating_activation(op, group.attribute("alpha", 0.2), group.attribute("beta", 0.5))
    elif op == "LeakyRelu":
        alpha = np.float32(group.attribute("alpha", 0.01))
        function = lambda x: np.where(x >= 0, x, alpha * x).astype(np.float32)  # noqa: E731
    elif op == "Relu":
        function = lambda x: np.maximum(x, zero)  # noqa: E731
    elif op == "Clip":
        low, high = group.constant(1), group.constant(2)
        if (len(group.node.inputs) > 1 and group.node.inputs[1] is not None and low is None) or (
                len(group.node.inputs) > 2 and group.node.inputs[2] is not None and high is None):
            return None
        low = np.float32(-np.inf) if low is None else np.float32(low)
        high = np.float32(np.inf) if high is None else np.float32(high)
        function = lambda x: np.minimum(np.maximum(x, low), high)  # noqa: E731
    else:
        return None
    return _table(group, function)


def lower_concat(group: Group) -> IntegerStep | None:
    inputs = group.inputs
    out = group.output
    if any(x is None or not x.per_tensor or x.fmt != out.fmt for x in inputs):
        return None
    tables = [_rescale_table(x, out) for x in inputs]

    def _concat_step(*codes, tables, qmin, axis):
        return concat_kernel.concat(list(codes), tables, qmin, axis)

    return group.step(_concat_step, [x.name for x in inputs], tables=tables, qmin=out.fmt.qmin,
                      axis=int(group.attribute("axis", 0)))


# -- pooling ----------------------------------------------------------------------------------------


def _pool_geometry(group: Group, rank: int) -> dict:
    kernel = tuple(group.attribute("kernel_shape", ()))
    return dict(kernel=kernel, strides=tuple(group.attribute("strides", (1,) * rank)),
                pads=tuple(group.attribute("pads", (0,) * 2 * rank)), auto_pad=group.attribute("auto_pad", "NOTSET"),
                dilations=tuple(group.attribute("dilations", (1,) * rank)),
                ceil_mode=bool(group.attribute("ceil_mode", 0)))


def _max_pool_step(x, *, kernel, strides, pads, auto_pad, dilations, ceil_mode, qmin, rescale):
    pads = explicit_pads(auto_pad, x.shape[2:], kernel, strides, dilations, pads)
    return _moved(pool_kernel.max_pool(x, kernel, strides, pads, dilations, ceil_mode, qmin), rescale, qmin)


def _average_pool_step(x, *, kernel, strides, pads, auto_pad, dilations, ceil_mode, count_include_pad,
                       zero_point, output):
    pads = explicit_pads(auto_pad, x.shape[2:], kernel, strides, dilations, pads)
    return pool_kernel.average_pool(x, zero_point, kernel, strides, pads, dilations, ceil_mode, count_include_pad,
                                    output)


def lower_pool(group: Group) -> IntegerStep | None:
    x = group.inputs[0]
    if x is None or not x.per_tensor:
        return None
    out, op = group.output, group.node.op_type
    division = 2.0 ** pool_kernel.DIVISION_BITS
    if op == "GlobalAveragePool":
        return group.step(pool_kernel.global_average_pool, [x.name], zero_point=x.zp,
                          output=_output_requantization(x.s / (out.s * division), out))
    geometry = _pool_geometry(group, len(group.attribute("kernel_shape", ())))
    if op == "AveragePool":
        return group.step(_average_pool_step, [x.name], **geometry,
                          count_include_pad=bool(group.attribute("count_include_pad", 0)), zero_point=x.zp,
                          output=_output_requantization(x.s / (out.s * division), out))
    if group.attribute("storage_order", 0) or len(group.node.outputs) > 1 and group.node.outputs[1].uses():
        return None
    return group.step(_max_pool_step, [x.name], **geometry, qmin=x.fmt.qmin, rescale=_rescale_table(x, out))


# -- data movement ----------------------------------------------------------------------------------


def _movement_step(x, *aux, op_type, attributes, zero_point, qmin, rescale):
    a = dict(attributes)
    if op_type == "Reshape":
        result = movement.reshape(x, aux[0], a.get("allowzero", 0))
    elif op_type == "Transpose":
        result = movement.transpose(x, a.get("perm"))
    elif op_type == "Gather":
        result = movement.gather(x, aux[0], a.get("axis", 0))
    elif op_type == "Flatten":
        result = movement.flatten(x, a.get("axis", 1))
    elif op_type == "Squeeze":
        result = movement.squeeze(x, aux[0] if aux else a.get("axes"))
    elif op_type == "Unsqueeze":
        result = movement.unsqueeze(x, aux[0] if aux else a.get("axes"))
    elif op_type == "Slice":
        result = movement.slice_(x, aux[0], aux[1], aux[2] if len(aux) > 2 else None, aux[3] if len(aux) > 3 else None)
    elif op_type == "Pad":
        result = movement.pad(x, aux[0], a.get("mode", "constant"), zero_point, aux[1] if len(aux) > 1 else None)
    else:
        raise ValueError(f"no movement kernel for {op_type}")
    return _moved(result, rescale, qmin)


_AUX_INPUTS = {"Reshape": (1,), "Gather": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Slice": (1, 2, 3, 4)}


def lower_movement(group: Group) -> IntegerStep | None:
    x = group.inputs[0]
    if x is None or not x.per_tensor:
        return None
    op = group.node.op_type
    names = [x.name]
    if op == "Pad":
        value = group.constant(2)
        if group.aux_name(2) is not None and (value is None or value.size and float(value.reshape(-1)[0]) != 0.0):
            return None
        names += [name for name in (group.aux_name(1), group.aux_name(3)) if name is not None]
    else:
        for index in _AUX_INPUTS.get(op, ()):
            name = group.aux_name(index)
            if name is None:
                break
            names.append(name)
    attributes = tuple((key, attr.value if not isinstance(attr.value, list) else tuple(attr.value))
                       for key, attr in group.node.attributes.items())
    return group.step(_movement_step, names, op_type=op, attributes=attributes, zero_point=x.zp,
                      qmin=x.fmt.qmin, rescale=_rescale_table(x, group.output))


def _exact_fraction(value: float) -> tuple[int, int]:
    fraction = Fraction(float(np.float32(value)))
    return fraction.numerator, fraction.denominator


def _resize_step(x, *, scales, sizes, transform, nearest_mode, qmin, rescale):
    indices = []
    for axis, size in enumerate(x.shape):
        if sizes is not None:
            out_size = sizes[axis]
            scale = Fraction(out_size, size)
        else:
            scale = Fraction(*scales[axis])
            out_size = math.floor(size * scale)
        indices.append(resize_kernel.nearest_indices(size, out_size, scale, transform, nearest_mode))
    return _moved(resize_kernel.gather_nearest(x, indices), rescale, qmin)


def lower_resize(group: Group) -> IntegerStep | None:
    x = group.inputs[0]
    if x is None or not x.per_tensor or group.attribute("mode", "nearest") != "nearest":
        return None
    if group.node.attributes.get("axes") is not None:
        return None
    if group.attribute("keep_aspect_ratio_policy", "stretch") != "stretch":
        return None
    scales, sizes = group.constant(2), group.constant(3)
    if (sizes is None or sizes.size == 0) and (scales is None or scales.size == 0):
        return None
    use_sizes = sizes is not None and sizes.size > 0
    return group.step(
        _resize_step, [x.name],
        scales=None if use_sizes else tuple(_exact_fraction(s) for s in scales),
        sizes=tuple(int(s) for s in sizes) if use_sizes else None,
        transform=group.attribute("coordinate_transformation_mode", "half_pixel"),
        nearest_mode=group.attribute("nearest_mode", "round_prefer_floor"), qmin=x.fmt.qmin,
        rescale=_rescale_table(x, group.output))


LOWERINGS: dict[str, Callable[[Group], IntegerStep | None]] = {
    "Conv": lower_conv,
    "ConvTranspose": lower_conv_transpose,
    "MatMul": lower_matmul,
    "Gemm": lower_gemm,
    "Add": lower_add,
    "Mul": lower_mul,
    "Concat": lower_concat,
    "AveragePool": lower_pool,
    "GlobalAveragePool": lower_pool,
    "MaxPool": lower_pool,
    "Sigmoid": lower_unary,
    "HardSigmoid": lower_unary,
    "HardSwish": lower_unary,
    "LeakyRelu": lower_unary,
    "Relu": lower_unary,
    "Clip": lower_unary,
    "Reshape": lower_movement,
    "Transpose": lower_movement,
    "Flatten": lower_movement,
    "Squeeze": lower_movement,
    "Unsqueeze": lower_movement,
    "Slice": lower_movement,
    "Pad": lower_movement,
    "Gather": lower_movement,
    "Resize": lower_resize,
}

# Inputs of each op that carry quantized data (the others are shapes, axes, bounds, scales).
DATA_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Conv": (0, 1, 2), "ConvTranspose": (0, 1, 2), "MatMul": (0, 1), "Gemm": (0, 1, 2), "Add": (0, 1),
    "Mul": (0, 1), "Concat": None,
}

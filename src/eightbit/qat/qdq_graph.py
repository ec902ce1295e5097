"""A quantized ONNX model (QuantizeLinear / DequantizeLinear pairs) run in PyTorch, its grids learnable.

Every QuantizeLinear of an activation is a fake quantization (docs/quantization.md eq. 5 then
eq. 1) whose scale is learned (eq. 36: round straight through, the scale's gradient as the
clamped, rounded expression gives it). Every DequantizeLinear of stored codes (weights, biases,
constants) reads a continuous parameter counted in steps of a grid, rounded straight through
to codes inside the codes' range (eq. 27). The float ops in between are PyTorch's.

`write` turns the learned parameters back into the same graph: the same nodes, the same zero
points and data types, new codes and activation scales, and each bias re-expressed on the
grid its layer's integer kernel requires (input scale x weight scale, eq. 7). Activation
scales that were equal stay equal (one parameter for every tensor on one grid): ONNX Runtime
runs data movement (MaxPool, Resize, Reshape, Concat) on codes only where both sides share a
grid, and the gates' fixed grids over [0, 1] (eq. 8b) are left as they are.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from eightbit.config import BIAS_S32
from eightbit.errors import InputError
from eightbit.qat.fake_quantize import dequantize_codes, fake_quantize
from eightbit.quant.affine import dequantize, quantize_bias

GATE_SCALE = 1 / 255


@dataclasses.dataclass(frozen=True)
class StoredCodes:
    """Codes stored in the model, learned as `parameter` x `unit` (one unit: one step of their grid,
    or for a bias, one step of its layer's output grid)."""

    initializer: str
    parameter: str
    scale: torch.Tensor
    zero_point: torch.Tensor
    lowest: int
    highest: int
    axis: int | None
    unit: torch.Tensor
    dtype: np.dtype


def _attributes(node: onnx.NodeProto) -> dict:
    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


def _code_range(codes: np.ndarray) -> tuple[int, int]:
    """Symmetric int8 weights keep the range their scale was chosen for (127 or, for 7-bit, 63)."""
    if codes.dtype == np.int8:
        reach = min(max(int(np.abs(codes.astype(np.int32)).max()), 1), 127)
        return min(-reach, int(codes.min())), reach
    info = np.iinfo(codes.dtype)
    return int(info.min), int(info.max)


def _symmetric_pads(node: onnx.NodeProto, attributes: dict) -> list[int]:
    if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise InputError(f"{node.op_type} {node.name!r} uses auto_pad; fine-tuning needs explicit pads")
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        raise InputError(f"{node.op_type} {node.name!r} pads its sides unequally {pads}; fine-tuning "
                         "supports equal pads only")
    return pads[:half]


class QdqGraph(torch.nn.Module):
    """A quantized ONNX model as a PyTorch module; `learn_scales` makes activation scales parameters."""

    def __init__(self, model: onnx.ModelProto, learn_scales: bool = True):
        super().__init__()
        self.model = model
        self.initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
        self.codes = torch.nn.ParameterDict()
        self.log_scales = torch.nn.ParameterDict()
        self.stored: dict[str, StoredCodes] = {}
        self.scale_parameter: dict[str, str] = {}
        self.given_scales: dict[str, torch.Tensor] = {}
        self.constants = {name: torch.tensor(np.array(array)) for name, array in self.initializers.items()}
        self.attributes = [_attributes(node) for node in model.graph.node]
        output_steps = self._output_steps()
        for node in model.graph.node:
            if node.op_type == "DequantizeLinear" and node.input[0] in self.initializers:
                self._store(node, output_steps)
            elif (learn_scales and node.op_type == "QuantizeLinear" and node.input[0] not in self.initializers
                  and node.input[1] in self.initializers):
                self._learn_scale(node)

    def _output_steps(self) -> dict[str, float]:
        """Bias DequantizeLinear output -> the step of its layer's output grid."""
        readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.model.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        steps = {}
        for node in self.model.graph.node:
            if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(node.input) > 2:
                quantizers = [reader for reader in readers.get(node.output[0], [])
                              if reader.op_type == "QuantizeLinear" and reader.input[1] in self.initializers]
                if quantizers:
                    steps[node.input[2]] = float(self.initializers[quantizers[0].input[1]])
        return steps

    def _store(self, node: onnx.NodeProto, output_steps: dict[str, float]) -> None:
        name = node.input[0]
        if name in self.stored:
            return
        codes = self.initializers[name]
        if not np.issubdtype(codes.dtype, np.integer):
            return
        scale = self.initializers[node.input[1]].astype(np.float64)
        zero_point = (self.initializers[node.input[2]] if len(node.input) > 2 and node.input[2]
                      else np.zeros(scale.shape, codes.dtype))
        axis = None
        if scale.ndim:
            axis = _attributes(node).get("axis", 1) % codes.ndim
        shape = [1] * codes.ndim
        if axis is not None:
            shape[axis] = -1
        step = scale.reshape(shape if axis is not None else ())
        value = dequantize(codes, scale, zero_point, axis).astype(np.float64)
        is_bias = codes.dtype == np.int32 and node.output[0] in output_steps
        unit = np.float64(output_steps[node.output[0]]) if is_bias else step
        key = f"c{len(self.codes)}"
        self.codes[key] = torch.nn.Parameter(torch.tensor(value / unit, dtype=torch.float32))
        lowest, highest = _code_range(codes)
        self.stored[node.output[0]] = StoredCodes(
            name, key, torch.tensor(scale, dtype=torch.float32), torch.tensor(zero_point.astype(np.int64)),
            lowest, highest, axis, torch.tensor(unit, dtype=torch.float32), codes.dtype)

    def _learn_scale(self, node: onnx.NodeProto) -> None:
        scale = self.initializers[node.input[1]]
        zero_point = self.initializers[node.input[2]]
        is_gate = zero_point.dtype == np.uint8 and int(zero_point) == 0 and abs(float(scale) - GATE_SCALE) < 1e-9
        if scale.ndim or is_gate:
            return
        key = f"s{int(np.float32(scale).view(np.uint32)):08x}"
        self.scale_parameter[node.input[1]] = key
        if key not in self.log_scales:
            self.given_scales[key] = torch.tensor(scale, dtype=torch.float32)
            self.log_scales[key] = torch.nn.Parameter(torch.zeros((), dtype=torch.float32))

    def _scale(self, name: str) -> torch.Tensor:
        key = self.scale_parameter.get(name)
        return self.given_scales[key] * torch.exp(self.log_scales[key]) if key is not None else self.constants[name]

    def _quantize(self, node: onnx.NodeProto, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 36 in two halves: the codes less the zero point (as float), and the scale, which the
        DequantizeLinear reading them multiplies back."""
        scale = self._scale(node.input[1])
        zero_point = self.initializers[node.input[2]]
        info = np.iinfo(zero_point.dtype)
        z = float(zero_point)
        scaled = x / scale
        rounded = scaled + (torch.round(scaled) - scaled).detach()
        return torch.clamp(rounded + z, info.min, info.max) - z, scale

    def _dequantize_stored(self, stored: StoredCodes) -> torch.Tensor:
        value = self.codes[stored.parameter] * stored.unit
        return fake_quantize(value, stored.scale, stored.zero_point, stored.lowest, stored.highest, stored.axis)

    def forward(self, *inputs: torch.Tensor, outputs: list[str] | None = None) -> list[torch.Tensor]:
        """The graph's outputs, or the values named in `outputs`."""
        values: dict[str, object] = dict(zip(self.input_names, inputs))
        for node, attributes in zip(self.model.graph.node, self.attributes):
            args = [self._value(values, name) for name in node.input]
            for name, value in zip(node.output, self._run(node, attributes, args)):
                values[name] = value
        return [values[name] for name in (outputs or [output.name for output in self.model.graph.output])]

    @property
    def input_names(self) -> list[str]:
        return [value.name for value in self.model.graph.input if value.name not in self.initializers]

    def _value(self, values: dict, name: str):
        if not name:
            return None
        if name in values:
            return values[name]
        return self.constants[name]

    def _run(self, node: onnx.NodeProto, attributes: dict, args: list) -> list:
        kind = node.op_type
        if kind == "DequantizeLinear":
            if node.output[0] in self.stored:
                return [self._dequantize_stored(self.stored[node.output[0]])]
            if isinstance(args[0], tuple):
                codes, scale = args[0]
                return [codes * scale]
            return [_dequantize_constant(args, attributes)]
        if kind == "QuantizeLinear":
            if node.input[0] in self.initializers:
                raise InputError(f"QuantizeLinear {node.name!r} quantizes a stored float tensor; fine-tuning "
                                 "takes models whose weights are stored as codes (as eightbit quantize writes them)")
            return [self._quantize(node, args[0])]
        run = FLOAT_OPS.get(kind)
        if run is None:
            raise InputError(f"fine-tuning has no PyTorch form of {kind} (node {node.name!r}); "
                             f"supported: {', '.join(sorted(FLOAT_OPS))}")
        result = run(node, attributes, args)
        return result if isinstance(result, list) else [result]

    def write(self) -> tuple[onnx.ModelProto, int]:
        """The model with the learned codes and scales; and how many stored codes changed."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        tensors = {tensor.name: tensor for tensor in model.graph.initializer}
        changed = 0
        with torch.no_grad():
            for stored in self.stored.values():
                value = (self.codes[stored.parameter] * stored.unit).double().numpy()
                shape = [1] * value.ndim
                if stored.axis is not None:
                    shape[stored.axis] = -1
                step = stored.scale.double().numpy().reshape(shape if stored.axis is not None else ())
                zero = stored.zero_point.numpy().reshape(shape if stored.axis is not None else ())
                codes = np.clip(np.round(value / step) + zero, stored.lowest, stored.highest).astype(stored.dtype)
                changed += int(np.count_nonzero(codes != self.initializers[stored.initializer]))
                tensors[stored.initializer].CopyFrom(numpy_helper.from_array(codes, stored.initializer))
            scales = {name: (self.given_scales[key] * torch.exp(self.log_scales[key])).numpy().astype(np.float32)
                      for name, key in self.scale_parameter.items() if float(self.log_scales[key]) != 0}
        for name, scale in scales.items():
            tensors[name].CopyFrom(numpy_helper.from_array(np.array(scale, dtype=np.float32), name))
        _rescale_biases(model, tensors, scales)
        return model, changed


def _rescale_biases(model: onnx.ModelProto, tensors: dict, scales: dict[str, np.float32]) -> None:
    """Each bias on its layer's new grid: input scale x weight scale (eq. 7), the same values rounded."""
    producer = {output: node for node in model.graph.node for output in node.output}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(node.input) < 3:
            continue
        x, w, b = (producer.get(name) for name in node.input[:3])
        if not all(n is not None and n.op_type == "DequantizeLinear" for n in (x, w, b)):
            continue
        if x.input[1] not in scales or b.input[0] not in tensors or b.input[1] not in tensors:
            continue
        old_scale = numpy_helper.to_array(tensors[b.input[1]])
        codes = numpy_helper.to_array(tensors[b.input[0]])
        bias = dequantize(codes, old_scale, np.zeros(old_scale.shape, np.int64), 0 if old_scale.ndim else None)
        weight_scale = numpy_helper.to_array(tensors[w.input[1]])
        codes, new_scale = quantize_bias(bias, scales[x.input[1]], np.broadcast_to(weight_scale, bias.shape), BIAS_S32)
        new_scale = new_scale.reshape(old_scale.shape) if old_scale.ndim else new_scale.reshape(-1)[0]
        tensors[b.input[1]].CopyFrom(numpy_helper.from_array(np.asarray(new_scale, np.float32), b.input[1]))
        tensors[b.input[0]].CopyFrom(numpy_helper.from_array(codes, b.input[0]))


def _dequantize_constant(args: list, attributes: dict) -> torch.Tensor:
    codes, scale = args[0], args[1]
    zero_point = args[2] if len(args) > 2 and args[2] is not None else torch.zeros_like(scale, dtype=torch.int64)
    axis = attributes.get("axis", 1) % codes.dim() if scale.dim() else None
    return dequantize_codes(codes, scale, zero_point, axis)


def _conv(node, a, args):
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    convolve = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
    return convolve(x, w, bias, a.get("strides", 1), _symmetric_pads(node, a), a.get("dilations", 1),
                    a.get("group", 1))


def _conv_transpose(node, a, args):
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    if "output_shape" in a:
        raise InputError(f"ConvTranspose {node.name!r} sets output_shape; fine-tuning needs pads")
    convolve = {3: F.conv_transpose1d, 4: F.conv_transpose2d, 5: F.conv_transpose3d}[x.dim()]
    return convolve(x, w, bias, a.get("strides", 1), _symmetric_pads(node, a), a.get("output_padding", 0),
                    a.get("group", 1), a.get("dilations", 1))


def _gemm(node, a, args):
    x = args[0].transpose(-1, -2) if a.get("transA", 0) else args[0]
    w = args[1].transpose(-1, -2) if a.get("transB", 0) else args[1]
    y = a.get("alpha", 1.0) * (x @ w)
    if len(args) > 2 and args[2] is not None:
        y = y + a.get("beta", 1.0) * args[2]
    return y


def _average_pool(node, a, args):
    count_include_pad = bool(a.get("count_include_pad", 0))
    pads = _symmetric_pads(node, a)
    pool = {3: F.avg_pool1d, 4: F.avg_pool2d, 5: F.avg_pool3d}[args[0].dim()]
    return pool(args[0], a["kernel_shape"], a.get("strides", 1), pads, bool(a.get("ceil_mode", 0)),
                count_include_pad)


def _max_pool(node, a, args):
    pool = {3: F.max_pool1d, 4: F.max_pool2d, 5: F.max_pool3d}[args[0].dim()]
    return pool(args[0], a["kernel_shape"], a.get("strides", 1), _symmetric_pads(node, a), a.get("dilations", 1),
                bool(a.get("ceil_mode", 0)))


def _reshape(node, a, args):
    shape = [int(v) for v in args[1].tolist()]
    shape = [args[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return args[0].reshape(shape)


def _resize(node, a, args):
    mode = a.get("mode", b"nearest")
    transform = a.get("coordinate_transformation_mode", b"half_pixel")
    x = args[0]
    scales = args[2] if len(args) > 2 and args[2] is not None and args[2].numel() else None
    sizes = [int(v) for v in args[3][2:].tolist()] if scales is None and len(args) > 3 else None
    factors = [float(v) for v in scales[2:].tolist()] if scales is not None else None
    if mode == b"nearest" and transform == b"asymmetric" and a.get("nearest_mode", b"round_prefer_floor") == b"floor":
        return F.interpolate(x, size=sizes, scale_factor=factors, mode="nearest")
    if mode == b"linear" and transform in (b"half_pixel", b"pytorch_half_pixel"):
        return F.interpolate(x, size=sizes, scale_factor=factors, mode="bilinear", align_corners=False)
    if mode == b"linear" and transform == b"align_corners":
        return F.interpolate(x, size=sizes, scale_factor=factors, mode="bilinear", align_corners=True)
    raise InputError(f"Resize {node.name!r}: mode {mode.decode()} with {transform.decode()} coordinates has no "
                     "PyTorch form here")


def _slice(node, a, args):
    x = args[0]
    starts, ends = args[1].tolist(), args[2].tolist()
    axes = args[3].tolist() if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = args[4].tolist() if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step != 1:
            raise InputError(f"Slice {node.name!r} steps by {step}; fine-tuning supports step 1")
        size = x.shape[axis]
        index[axis] = slice(max(min(start, size), -size), max(min(end, size), -size - 1))
    return x[tuple(index)]


def _clip(node, a, args):
    low = args[1] if len(args) > 1 and args[1] is not None else a.get("min")
    high = args[2] if len(args) > 2 and args[2] is not None else a.get("max")
    return torch.clamp(args[0], None if low is None else float(low), None if high is None else float(high))


def _squeeze(node, a, args):
    axes = args[1].tolist() if len(args) > 1 and args[1] is not None else a.get("axes")
    if axes is None:
        return args[0].squeeze()
    x = args[0]
    for axis in sorted((axis % x.dim() for axis in axes), reverse=True):
        x = x.squeeze(axis)
    return x


def _unsqueeze(node, a, args):
    axes = args[1].tolist() if len(args) > 1 and args[1] is not None else a["axes"]
    x = args[0]
    for axis in sorted(axis % (x.dim() + len(axes)) for axis in axes):
        x = x.unsqueeze(axis)
    return x


def _gather(node, a, args):
    x, indices = args[0], args[1].long()
    axis = a.get("axis", 0) % x.dim()
    taken = torch.index_select(x, axis, indices.reshape(-1))
    return taken.reshape([*x.shape[:axis], *indices.shape, *x.shape[axis + 1:]])


_TORCH_TYPES = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.DOUBLE: torch.float64, onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.BOOL: torch.bool,
}


def _cast(node, a, args):
    if a["to"] not in _TORCH_TYPES:
        raise InputError(f"Cast {node.name!r} to {onnx.TensorProto.DataType.Name(a['to'])} has no PyTorch form here")
    return args[0].to(_TORCH_TYPES[a["to"]])


FLOAT_OPS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": lambda node, a, args: args[0] @ args[1],
    "Add": lambda node, a, args: args[0] + args[1],
    "Sub": lambda node, a, args: args[0] - args[1],
    "Mul": lambda node, a, args: args[0] * args[1],
    "Div": lambda node, a, args: args[0] / args[1],
    "Relu": lambda node, a, args: torch.relu(args[0]),
    "Clip": _clip,
    "Sigmoid": lambda node, a, args: torch.sigmoid(args[0]),
    "HardSigmoid": lambda node, a, args: torch.clamp(a.get("alpha", 0.2) * args[0] + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda node, a, args: F.hardswish(args[0]),
    "Tanh": lambda node, a, args: torch.tanh(args[0]),
    "Softmax": lambda node, a, args: torch.softmax(args[0], a.get("axis", -1)),
    "GlobalAveragePool": lambda node, a, args: args[0].mean(dim=tuple(range(2, args[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda node, a, args: args[0].amax(dim=tuple(range(2, args[0].dim())), keepdim=True),
    "AveragePool": _average_pool,
    "MaxPool": _max_pool,
    "Concat": lambda node, a, args: torch.cat(args, a["axis"]),
    "Reshape": _reshape,
    "Flatten": lambda node, a, args: args[0].reshape(int(np.prod(args[0].shape[:a.get("axis", 1)])), -1),
    "Transpose": lambda node, a, args: args[0].permute(a.get("perm", list(range(args[0].dim()))[::-1])),
    "Identity": lambda node, a, args: args[0],
    "Shape": lambda node, a, args: torch.tensor(list(args[0].shape), dtype=torch.int64),
    "Cast": _cast,
    "Slice": _slice,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Resize": _resize,
    "Gather": _gather,
}

"""Single-op QDQ models (`Q -> DQ -> op -> Q`, weights as integer constants + DQ) for backend tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx.reference
from onnx import TensorProto, helper

from conftest import make_model, tensor, value_info

WEIGHTS = np.random.default_rng(7)


@dataclasses.dataclass
class OpCase:
    op_type: str
    shape: tuple[int, ...]
    attributes: dict = dataclasses.field(default_factory=dict)
    weight: np.ndarray | None = None  # quantized per output channel, zero point 0
    weight_axis: int = 0
    bias: bool = False
    second: tuple[int, ...] | None = None  # a second activation input of this shape
    extra: tuple[np.ndarray, ...] = ()  # constant non-data inputs (shapes, axes, pads, bounds)
    exact: bool = False  # output codes must be identical (lookups, data movement)


def _qparams(array: np.ndarray) -> tuple[np.float32, np.uint8]:
    low, high = min(float(array.min()), 0.0), max(float(array.max()), 0.0)
    scale = np.float32((high - low) / 255 or 1.0)
    return scale, np.uint8(np.clip(round(-low / float(scale)), 0, 255))


def _float_model(case: OpCase, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    feeds = {"x": rng.normal(0, 1, case.shape).astype(np.float32)}
    inputs = ["x"]
    inits = []
    if case.second is not None:
        feeds["y"] = rng.normal(0.5, 2, case.second).astype(np.float32)
        inputs.append("y")
    if case.weight is not None:
        inits.append(tensor("w", case.weight))
        inputs.append("w")
        if case.bias:
            channels = case.weight.shape[case.weight_axis] * case.attributes.get("group", 1) \
                if case.op_type == "ConvTranspose" else case.weight.shape[case.weight_axis]
            inits.append(tensor("b", rng.normal(0, 0.5, channels).astype(np.float32)))
            inputs.append("b")
    for i, array in enumerate(case.extra):
        name = f"extra{i}"
        if array is None:
            inputs.append("")
            continue
        inits.append(tensor(name, array))
        inputs.append(name)
    node = helper.make_node(case.op_type, inputs, ["out"], **case.attributes)
    graph_inputs = [value_info(name, list(feeds[name].shape)) for name in feeds]
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "op", graph_inputs, [output], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), feeds


def qdq_model(case: OpCase, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The single-op model with Q/DQ on activations, integer weights and an int32 bias; its inputs, drawn
    with `seed`."""
    float_model, feeds = _float_model(case, np.random.default_rng(seed))
    out = onnx.reference.ReferenceEvaluator(float_model).run(None, feeds)[0]
    nodes, inits = [], [i for i in float_model.graph.initializer if i.name not in ("w", "b")]
    scales = {}
    for name, array in feeds.items():
        scale, zero = _qparams(array)
        scales[name] = scale
        inits += [tensor(f"{name}_s", scale), tensor(f"{name}_z", zero)]
        nodes += [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
                  helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"])]
    op = float_model.graph.node[0]
    renamed = [f"{i}_dq" if i in feeds else i for i in op.input]
    if case.weight is not None:
        axis = case.weight_axis
        reduce = tuple(a for a in range(case.weight.ndim) if a != axis)
        # 7-bit codes: ONNX Runtime computes them exactly on any CPU (docs, section 4).
        w_scale = (np.abs(case.weight).max(axis=reduce) / 63).astype(np.float32)
        shape = [1] * case.weight.ndim
        shape[axis] = -1
        codes = np.clip(np.rint(case.weight / w_scale.reshape(shape)), -63, 63).astype(np.int8)
        inits += [tensor("w_q", codes), tensor("w_s", w_scale), tensor("w_z", np.zeros(w_scale.shape, np.int8))]
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], axis=axis))
        renamed[renamed.index("w")] = "w_dq"
        if case.bias:
            bias = onnx.numpy_helper.to_array(next(i for i in float_model.graph.initializer if i.name == "b"))
            b_scale = (scales["x"] * w_scale).astype(np.float32)
            b_scale = np.broadcast_to(b_scale, bias.shape).astype(np.float32) if b_scale.size == 1 else b_scale
            inits += [tensor("b_q", np.rint(bias / b_scale).astype(np.int32)), tensor("b_s", b_scale),
                      tensor("b_z", np.zeros(bias.shape, np.int32))]
            nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["b_dq"], axis=0))
            renamed[renamed.index("b")] = "b_dq"
    nodes.append(helper.make_node(case.op_type, renamed, ["out_float"], **case.attributes))
    out_scale, out_zero = _qparams(out)
    if case.exact and case.op_type not in ("Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Relu", "Clip"):
        out_scale, out_zero = scales["x"], inits[[i.name for i in inits].index("x_z")]
        out_zero = onnx.numpy_helper.to_array(out_zero)
    inits += [tensor("out_s", out_scale), tensor("out_z", out_zero)]
    nodes.append(helper.make_node("QuantizeLinear", ["out_float", "out_s", "out_z"], ["out"]))
    graph_inputs = [value_info(name, list(feeds[name].shape)) for name in feeds]
    model = make_model(nodes, graph_inputs, [value_info("out", list(out.shape), TensorProto.UINT8)], inits, opset=19)
    return model, feeds


def _weights(*shape: int) -> np.ndarray:
    return WEIGHTS.normal(0, 0.5, shape).astype(np.float32)


CASES = {
    "conv": OpCase("Conv", (2, 3, 9, 9), {"pads": [1, 1, 1, 1]}, _weights(4, 3, 3, 3), bias=True),
    "conv_strided_dilated": OpCase("Conv", (1, 4, 11, 10), {"strides": [2, 2], "dilations": [2, 1],
                                                            "pads": [0, 1, 2, 1]}, _weights(5, 4, 3, 3), bias=True),
    "conv_grouped": OpCase("Conv", (1, 6, 7, 7), {"group": 2, "pads": [1, 1, 1, 1]}, _weights(4, 3, 3, 3)),
    "conv_depthwise": OpCase("Conv", (2, 5, 8, 8), {"group": 5, "strides": [2, 2], "auto_pad": "SAME_UPPER"},
                             _weights(5, 1, 3, 3), bias=True),
    "conv_transpose": OpCase("ConvTranspose", (1, 4, 5, 6), {"strides": [2, 2], "pads": [1, 1, 1, 1],
                                                             "output_padding": [1, 1]},
                             _weights(4, 3, 3, 3), weight_axis=1, bias=True),
    "matmul": OpCase("MatMul", (2, 3, 16), {}, _weights(16, 5), weight_axis=1),
    "matmul_of_activations": OpCase("MatMul", (2, 3, 16), second=(16, 5)),
    "gemm": OpCase("Gemm", (3, 16), {"transB": 1}, _weights(6, 16), bias=True),
    "add_broadcast": OpCase("Add", (2, 4, 5, 5), second=(1, 4, 1, 1)),
    "mul": OpCase("Mul", (2, 4, 5, 5), second=(2, 4, 5, 5)),
    "concat": OpCase("Concat", (1, 3, 4, 4), {"axis": 1}, second=(1, 2, 4, 4)),
    "max_pool": OpCase("MaxPool", (1, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 0, 0],
                                                 "ceil_mode": 1}, exact=True),
    "average_pool": OpCase("AveragePool", (1, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2],
                                                         "pads": [1, 1, 1, 1]}),
    "average_pool_with_pads_counted": OpCase("AveragePool", (1, 3, 8, 8), {"kernel_shape": [2, 3],
                                             "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    "global_average_pool": OpCase("GlobalAveragePool", (2, 6, 7, 7)),
    "sigmoid": OpCase("Sigmoid", (2, 50), exact=True),
    "hard_sigmoid": OpCase("HardSigmoid", (2, 50), {"alpha": 0.2, "beta": 0.5}, exact=True),
    "hard_swish": OpCase("HardSwish", (2, 50), exact=True),
    "leaky_relu": OpCase("LeakyRelu", (2, 50), {"alpha": 0.1}, exact=True),
    "relu": OpCase("Relu", (2, 50), exact=True),
    "clip": OpCase("Clip", (2, 50), extra=(np.array(-0.5, np.float32), np.array(1.0, np.float32)), exact=True),
    "reshape": OpCase("Reshape", (2, 3, 4), extra=(np.array([0, -1], np.int64),), exact=True),
    "transpose": OpCase("Transpose", (2, 3, 4), {"perm": [2, 0, 1]}, exact=True),
    "flatten": OpCase("Flatten", (2, 3, 4), {"axis": 2}, exact=True),
    "squeeze": OpCase("Squeeze", (2, 1, 4), extra=(np.array([1], np.int64),), exact=True),
    "unsqueeze": OpCase("Unsqueeze", (2, 4), extra=(np.array([0, 3], np.int64),), exact=True),
    "slice": OpCase("Slice", (4, 10), extra=(np.array([1, -2], np.int64), np.array([100, 1], np.int64),
                                             np.array([0, 1], np.int64), np.array([2, -3], np.int64)), exact=True),
    "pad": OpCase("Pad", (1, 2, 3, 3), extra=(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64),), exact=True),
    "gather_channels": OpCase("Gather", (1, 6, 2, 3), {"axis": 1}, extra=(np.array([0, 3, 1, 4, -4, 5], np.int64),),
                              exact=True),
    "resize_nearest": OpCase("Resize", (1, 2, 3, 4), {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                                      "nearest_mode": "floor"},
                             extra=(None, np.array([1, 1, 2, 1.5], np.float32)), exact=True),
}

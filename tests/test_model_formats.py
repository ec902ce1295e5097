"""Models in the forms exporters write (old opsets and IR versions, half-precision floats) come out as valid
quantized models that agree with float as their float32, current-opset twins do."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import eightbit
from eightbit.backends.onnxruntime import OrtSession


def _conv_relu(opset: int, ir_version: int) -> onnx.ModelProto:
    """Conv -> Relu; at IR version 3 its initializers are graph inputs too, as that version requires."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    if ir_version < 4:
        inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in weights]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "conv_relu", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def test_an_opset_7_ir_3_model_comes_out_valid_and_quantized():
    samples = {"x": np.random.default_rng(1).normal(size=(8, 1, 3, 8, 8)).astype(np.float32)}
    old = ir.to_proto(eightbit.quantize(_conv_relu(7, 3), samples, show_progress=False))
    onnx.checker.check_model(old)
    assert any(node.op_type == "QuantizeLinear" for node in old.graph.node)
    new = ir.to_proto(eightbit.quantize(_conv_relu(17, 8), samples, show_progress=False))
    assert [n.op_type for n in old.graph.node] == [n.op_type for n in new.graph.node]


def _half(model: onnx.ModelProto, elem_type: int) -> onnx.ModelProto:
    """`model` with every float32 initializer and graph input and output in `elem_type`."""
    half = onnx.ModelProto()
    half.CopyFrom(model)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    for index, tensor in enumerate(half.graph.initializer):
        half.graph.initializer[index].CopyFrom(numpy_helper.from_array(
            numpy_helper.to_array(tensor).astype(dtype), tensor.name))
    for value in [*half.graph.input, *half.graph.output]:
        value.type.tensor_type.elem_type = elem_type
    onnx.checker.check_model(half)
    return half


@pytest.mark.parametrize("elem_type", [TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_a_half_precision_model_is_quantized_as_its_float32_twin_and_keeps_its_types(elem_type):
    """Its weights rounded to half first, the twin is the same function: the same graph comes out, around one
    Cast per input and output, agreeing with the float model as closely."""
    rng = np.random.default_rng(2)
    samples = rng.normal(size=(16, 1, 3, 8, 8)).astype(np.float32)
    half = _half(_conv_relu(17, 8), elem_type)
    twin = _half(half, TensorProto.FLOAT)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    quantized = ir.to_proto(eightbit.quantize(half, {"x": samples.astype(dtype)}, show_progress=False))
    onnx.checker.check_model(quantized)
    reference = ir.to_proto(eightbit.quantize(twin, {"x": samples.astype(dtype).astype(np.float32)},
                                              show_progress=False))
    ops = [node.op_type for node in quantized.graph.node]
    assert ops[0] == ops[-1] == "Cast" and ops[1:-1] == [node.op_type for node in reference.graph.node]
    assert [v.type.tensor_type.elem_type for v in [*quantized.graph.input, *quantized.graph.output]] == \
        [elem_type, elem_type]
    assert [v.name for v in quantized.graph.input] == ["x"] and [v.name for v in quantized.graph.output] == ["y"]

    if elem_type == TensorProto.BFLOAT16:
        return  # ONNX Runtime's Python API takes no bfloat16 arrays; the graph between the Casts is the twin's
    x = samples[0].astype(dtype)
    got = OrtSession(ir.from_proto(quantized)).run({"x": x})["y"].astype(np.float32)
    expected = OrtSession(ir.from_proto(reference)).run({"x": x.astype(np.float32)})["y"]
    exact = OrtSession(ir.from_proto(twin)).run({"x": x.astype(np.float32)})["y"]
    half_step = np.abs(expected).max() * 2.0 ** -10
    np.testing.assert_allclose(got, expected, atol=half_step)  # the output's own rounding to half, no more
    assert np.abs(got - exact).max() < 0.1 * np.abs(exact).max()


def test_a_scalar_input_is_fed_as_a_0_d_array():
    """A 0-d input (a sample rate, a threshold): one value a sample, fed as the 0-d array the model takes."""
    rng = np.random.default_rng(3)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Cast", ["rate"], ["rate_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "rate_f"], ["scaled"]),
             helper.make_node("Conv", ["scaled", "w"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "scalar", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                                                helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    samples = {"x": rng.normal(size=(8, 1, 3, 8, 8)).astype(np.float32), "rate": np.arange(1, 9, dtype=np.int64)}
    quantized = eightbit.quantize(model, samples, show_progress=False)
    assert any(node.op_type == "Conv" for node in quantized.graph)
    got = OrtSession(quantized).run({"x": samples["x"][2], "rate": np.array(3, np.int64)})["y"]
    expected = OrtSession(ir.from_proto(model)).run({"x": samples["x"][2], "rate": np.array(3, np.int64)})["y"]
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()

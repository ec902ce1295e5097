"""Small ONNX graphs built in the tests (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def value_info(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def small_cnn(seed: int = 0, channels: int = 8, softmax: bool = True) -> onnx.ModelProto:
    """Conv-BN-Relu, Conv-Relu6 + residual Add, MaxPool, GlobalAveragePool, Flatten, Gemm, (Softmax)."""
    rng = np.random.default_rng(seed)
    c = channels
    inits = [
        tensor("w1", rng.normal(0, 0.5, (c, 3, 3, 3)).astype(np.float32)),
        tensor("b1", rng.normal(0, 0.1, c).astype(np.float32)),
        tensor("bn_scale", rng.uniform(0.5, 1.5, c).astype(np.float32)),
        tensor("bn_bias", rng.normal(0, 0.1, c).astype(np.float32)),
        tensor("bn_mean", rng.normal(0, 0.1, c).astype(np.float32)),
        tensor("bn_var", rng.uniform(0.5, 1.5, c).astype(np.float32)),
        tensor("w2", rng.normal(0, 0.3, (c, c, 3, 3)).astype(np.float32)),
        tensor("b2", rng.normal(0, 0.1, c).astype(np.float32)),
        tensor("zero", np.array(0.0, np.float32)),
        tensor("six", np.array(6.0, np.float32)),
        tensor("fc_w", rng.normal(0, 0.3, (10, c)).astype(np.float32)),
        tensor("fc_b", rng.normal(0, 0.1, 10).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="relu6"),
        helper.make_node("Add", ["r1", "r2"], ["sum"], name="residual"),
        helper.make_node("MaxPool", ["sum"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="maxpool"),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    output = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax"))
        output = "probs"
    return make_model(nodes, [value_info("x", ["batch", 3, 16, 16])], [value_info(output, ["batch", 10])], inits)


@pytest.fixture
def cnn_path(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), path)
    return path


@pytest.fixture
def cnn_data(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "calib.npz"
    np.savez(path, x=rng.normal(0, 1, (24, 3, 16, 16)).astype(np.float32))
    return path

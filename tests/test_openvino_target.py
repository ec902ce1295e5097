"""`--target openvino`: grids only on the inputs of the ops OpenVINO runs on integers, zero points 0 but after a
Concat, no pair after data movement; the model agrees with float in ONNX Runtime and in OpenVINO."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import helper

import eightbit
from conftest import make_model, tensor, value_info
from eightbit.backends import OrtSession
from eightbit.backends.openvino import OpenVinoSession, openvino_available
from eightbit.cli import main
from eightbit.ir import as_model, save_model
from eightbit.measure.metrics import sqnr_db

RNG = np.random.default_rng(0)
CALIBRATION = RNG.normal(0, 1, (32, 3, 16, 16)).astype(np.float32)
HELD_OUT = RNG.normal(0, 1, (16, 3, 16, 16)).astype(np.float32)


def _mobile_block() -> object:
    """conv -> hard-swish -> scale and shift by constants -> conv -> Relu; a sigmoid gate (conv -> sigmoid, Mul);
    a channel shuffle (Reshape, Transpose, Reshape); a Concat of it and another convolution; a last convolution."""
    rng = np.random.default_rng(1)
    inits = [
        tensor("w1", rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32)),
        tensor("b1", rng.normal(0, 0.1, 8).astype(np.float32)),
        tensor("alpha", np.float32(1.3)), tensor("beta", np.float32(-0.2)),
        tensor("w2", rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)),
        tensor("wg", rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)),
        tensor("split", np.array([1, 2, 4, 16, 16], np.int64)),
        tensor("merged", np.array([1, 8, 16, 16], np.int64)),
        tensor("w4", rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32)),
        tensor("w3", rng.normal(0, 0.2, (4, 12, 3, 3)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("HardSwish", ["c1"], ["h1"], name="swish1"),
        helper.make_node("Mul", ["h1", "alpha"], ["m1"], name="scale1"),
        helper.make_node("Add", ["m1", "beta"], ["a1"], name="shift1"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["a1", "wg"], ["g"], name="gate_conv"),
        helper.make_node("Sigmoid", ["g"], ["s"], name="gate"),
        helper.make_node("Mul", ["r2", "s"], ["gated"], name="gated"),
        helper.make_node("Reshape", ["gated", "split"], ["t1"], name="shuffle_split"),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 2, 1, 3, 4], name="shuffle"),
        helper.make_node("Reshape", ["t2", "merged"], ["shuffled"], name="shuffle_merge"),
        helper.make_node("Conv", ["a1", "w4"], ["c4"], name="conv4"),
        helper.make_node("Concat", ["shuffled", "c4"], ["both"], axis=1, name="concat"),
        helper.make_node("Conv", ["both", "w3"], ["y"], pads=[1, 1, 1, 1], name="conv3"),
    ]
    return make_model(nodes, [value_info("x", [1, 3, 16, 16])], [value_info("y", [1, 4, 16, 16])], inits)


@pytest.fixture(scope="module")
def made():
    float_model = _mobile_block()
    return float_model, eightbit.quantize(float_model, {"x": CALIBRATION}, target="openvino", min_sqnr="off")


def _reader(model, name: str):
    (use,) = model.graph.node(name).outputs[0].uses()
    return use.node


def _zero_point(model, value_name: str) -> np.ndarray:
    quantizer = next(node for node in model.graph if node.op_type == "QuantizeLinear"
                     and node.inputs[0].name == value_name)
    return quantizer.inputs[2].const_value.numpy()


def test_no_grid_between_an_op_and_what_openvino_computes_in_its_kernel(made):
    _, model = made
    assert _reader(model, "conv1").op_type == "HardSwish"  # the convolution gives its output in float
    assert _reader(model, "swish1").op_type == "Mul"  # scale and shift by constants stay float
    assert _reader(model, "scale1").op_type == "Add"
    assert _reader(model, "gate_conv").op_type == "Sigmoid"
    assert _reader(model, "shift1").op_type == "QuantizeLinear"  # the grid sits where the convolutions read


def test_zero_points_are_0_unsigned_where_nonnegative_and_after_a_concat(made):
    _, model = made
    shifted, relu, gate = _zero_point(model, "a1"), _zero_point(model, "r2"), _zero_point(model, "s")
    assert shifted.dtype == np.int8 and shifted == 0  # hard-swish's range reaches below 0: s8
    assert relu.dtype == np.uint8 and relu == 0 and gate.dtype == np.uint8 and gate == 0
    # A Concat's output and inputs: unsigned, whatever their range.
    assert _zero_point(model, "both").dtype == np.uint8 and _zero_point(model, "c4").dtype == np.uint8


def test_data_movement_gets_no_pair_of_its_own(made):
    _, model = made
    assert _reader(model, "shuffle_split").op_type == "Transpose"
    assert _reader(model, "shuffle").op_type == "Reshape"


def test_agrees_with_float_in_onnx_runtime(made):
    float_model, model = made
    reference, quantized = OrtSession(as_model(float_model)), OrtSession(model)
    expected = np.concatenate([reference.run({"x": x[None]})["y"] for x in HELD_OUT])
    got = np.concatenate([quantized.run({"x": x[None]})["y"] for x in HELD_OUT])
    assert sqnr_db(expected, got) > 25


@pytest.mark.skipif(not openvino_available(), reason="needs openvino (the dev extra installs it)")
def test_openvino_computes_what_onnx_runtime_computes(made, tmp_path):
    """The model's meaning is the same in both runtimes: OpenVINO agrees with ONNX Runtime's run of the same
    QDQ model far better than either with float (a signed grid after the Concat would not)."""
    _, model = made
    path = tmp_path / "model.onnx"
    save_model(model, path)
    reference, openvino = OrtSession(model), OpenVinoSession(path)
    for x in HELD_OUT[:4]:
        assert sqnr_db(reference.run({"x": x[None]})["y"], openvino.run({"x": x[None]})["y"]) > 35


def _dense_block() -> object:
    """DenseNet's pattern: a Concat of a convolution's input and output, read only by a batch normalization."""
    rng = np.random.default_rng(2)
    inits = [tensor("w1", rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32)),
             tensor("w2", rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)),
             tensor("w3", rng.normal(0, 0.3, (4, 16, 1, 1)).astype(np.float32)),
             *(tensor(name, rng.uniform(0.5, 1.5, 16).astype(np.float32)) for name in ("scale", "var")),
             *(tensor(name, rng.normal(0, 0.2, 16).astype(np.float32)) for name in ("bias", "mean"))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Concat", ["r1", "c2"], ["dense"], axis=1, name="concat"),
             helper.make_node("BatchNormalization", ["dense", "scale", "bias", "mean", "var"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w3"], ["y"], name="conv3")]
    return make_model(nodes, [value_info("x", [1, 3, 16, 16])], [value_info("y", [1, 4, 16, 16])], inits)


def test_a_concat_batch_normalization_reads_keeps_the_usual_grids_and_runs_in_openvino(tmp_path):
    """No convolution reads this Concat: its grids are the usual ones (zero point 0), which OpenVINO runs; an
    unsigned grid with a zero point there crashed it on DenseNet-121."""
    float_model = _dense_block()
    model = eightbit.quantize(float_model, {"x": CALIBRATION}, target="openvino", min_sqnr="off")
    assert _zero_point(model, "dense") == 0 and _zero_point(model, "c2").dtype == np.int8
    if openvino_available():
        path = tmp_path / "dense.onnx"
        save_model(model, path)
        got = OpenVinoSession(path).run({"x": HELD_OUT[:1]})["y"]
        assert sqnr_db(OrtSession(model).run({"x": HELD_OUT[:1]})["y"], got) > 35


@pytest.mark.skipif(not openvino_available(), reason="needs openvino (the dev extra installs it)")
def test_the_quantize_report_times_the_model_in_the_runtime_it_is_made_for(cnn_path, cnn_data, tmp_path, capsys):
    """Made for OpenVINO, timed in OpenVINO (bench's method); made for TensorRT, which does not run here: not
    timed at all."""
    for target, runtime in (("openvino", "openvino"), ("ort", "ort"), ("tensorrt", None)):
        output = tmp_path / f"{target}.onnx"
        assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "--target", target, "-o", str(output),
                     "--json", "-q"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report.get("latency_ms", {}).get("runtime") == runtime

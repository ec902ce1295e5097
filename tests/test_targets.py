"""`--target tensorrt` and `--target npu`: the formats change, the runtime's rules hold, ONNX Runtime measures
the agreement (neither runtime runs here)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import eightbit
from conftest import make_model, small_cnn, tensor, value_info
from eightbit.backends import OrtSession
from eightbit.cli import main
from eightbit.errors import InputError
from eightbit.ir import as_model
from eightbit.measure.metrics import sqnr_db
from eightbit.target_rules import breaches

RNG = np.random.default_rng(0)
CALIBRATION = RNG.normal(0, 1, (64, 3, 16, 16)).astype(np.float32)
HELD_OUT = RNG.normal(0, 1, (32, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def built():
    """The residual CNN (Relu, Clip(0, 6), Add, pools, Gemm) for each target, and its output SQNR held out."""
    model = small_cnn(softmax=False)
    expected = OrtSession(as_model(model)).run({"x": HELD_OUT})["logits"]
    results = {}
    for target in ("ort", "tensorrt", "npu"):
        quantized = eightbit.quantize(model, {"x": CALIBRATION}, target=target)
        results[target] = quantized, sqnr_db(expected, OrtSession(quantized).run({"x": HELD_OUT})["logits"])
    return results


def _codes(model, op_type: str) -> set[str]:
    return {str(node.inputs[2].dtype) for node in model.graph if node.op_type == op_type and len(node.inputs) > 2
            and node.inputs[2] is not None}


def test_each_target_meets_its_own_rules_and_not_the_others(built):
    assert breaches(built["tensorrt"][0], "tensorrt") == []
    assert breaches(built["npu"][0], "npu") == []
    assert {b.rule for b in breaches(built["ort"][0], "tensorrt")} >= {"int8, zero point 0"}
    assert {b.rule for b in breaches(built["ort"][0], "npu")} >= {"opset 21", "16-bit activations per tensor"}
    assert breaches(built["npu"][0], "tensorrt") and breaches(built["tensorrt"][0], "npu")


def test_tensorrt_model_is_int8_with_zero_points_0_float_biases_and_activations_before_quantize(built):
    model = built["tensorrt"][0]
    assert _codes(model, "QuantizeLinear") == {"INT8"}
    assert all(np.all(node.inputs[2].const_value.numpy() == 0) for node in model.graph
               if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.inputs) > 2)
    convolutions = [node for node in model.graph if node.op_type == "Conv"]
    assert all(conv.inputs[2].producer() is None and conv.inputs[2].const_value.dtype == onnx.TensorProto.FLOAT
               for conv in convolutions)
    # Relu and Clip(0, 6) follow their convolution directly, and a QuantizeLinear follows them.
    for conv in convolutions:
        (use,) = conv.outputs[0].uses()
        assert use.node.op_type in ("Relu", "Clip")
        assert [u.node.op_type for u in use.node.outputs[0].uses()] == ["QuantizeLinear"]


def test_npu_model_has_16_bit_activations_at_opset_21(built):
    model = built["npu"][0]
    assert model.opset_imports[""] == 21
    assert _codes(model, "QuantizeLinear") == {"UINT16"}


def test_agreement_measured_in_onnx_runtime(built):
    """A16W8 agrees better than the default u8 activations; TensorRT's zero point 0 leaves a post-ReLU tensor
    half the codes (one bit, ~6 dB on that tensor), so it agrees less, by at most that bit."""
    default_db, tensorrt_db, npu_db = (built[target][1] for target in ("ort", "tensorrt", "npu"))
    assert npu_db > default_db + 3
    assert default_db - 6.5 < tensorrt_db < default_db + 1


def test_a_residual_add_with_one_float_input_breaks_the_tensorrt_rule():
    scale, zero = tensor("s", np.float32(0.1)), tensor("z", np.int8(0))
    nodes = [helper.make_node("QuantizeLinear", ["a", "s", "z"], ["a_q"]),
             helper.make_node("DequantizeLinear", ["a_q", "s", "z"], ["a_dq"]),
             helper.make_node("Add", ["a_dq", "b"], ["y"], name="residual")]
    model = make_model(nodes, [value_info("a", [1, 4]), value_info("b", [1, 4])], [value_info("y", [1, 4])],
                       [scale, zero])
    assert [(b.rule, b.node) for b in breaches(as_model(model), "tensorrt")] == \
        [("both inputs of a residual Add quantized", "residual")]


@pytest.mark.parametrize("options, message", [
    ({"target": "tensorrt", "scheme": "dynamic"}, "static schemes"),
    ({"target": "npu", "scheme": "po2"}, "16-bit"),
    ({"target": "npu", "calibrate": "mse"}, "8-bit grids"),
    ({"target": "tensorrt", "speed_check": True}, "does not run here"),
])
def test_combinations_a_target_cannot_take_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        eightbit.quantize(small_cnn(), {"x": CALIBRATION[:8]}, **options)


def test_a_model_breaking_its_targets_rules_is_a_bug_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    source = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), source)
    np.savez(tmp_path / "calibration.npz", x=CALIBRATION[:8])
    monkeypatch.setattr("eightbit.api.breaches", lambda model, target: ["a rule: a node: found"])
    output = tmp_path / "cnn.trt.onnx"
    code = main(["quantize", str(source), "--calibration", str(tmp_path / "calibration.npz"), "--target", "tensorrt",
                 "-o", str(output), "--no-report"])
    assert code not in (0, 2)
    assert "a bug in eightbit" in capsys.readouterr().err
    assert not output.exists()

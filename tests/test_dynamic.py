"""The dynamic scheme on the shipped transformer and LSTM, its reference kernels, bias correction."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import onnx_ir as ir
import pytest
from onnx import helper

from conftest import make_model, tensor, value_info
from eightbit import api
from eightbit.backends import OrtSession
from eightbit.backends.reference import ReferenceSession
from eightbit.cli import main
from eightbit.demo import shipped_digits
from eightbit.isa import CpuFeatures
from eightbit.measure.metrics import sqnr_db
from eightbit.pipeline.steps import dynamic as dynamic_step
from eightbit.quant.affine import quantize_at_run_time
from eightbit.quant.bias_correction import conv_output_shift, matmul_output_shift

DATA = Path(str(resources.files("eightbit") / "data"))


def _outputs(path_or_model, rows: np.ndarray) -> np.ndarray:
    return OrtSession(path_or_model).run({"rows": rows})["logits"]


@pytest.fixture(scope="module")
def digits():
    return shipped_digits()


def test_transformer_integer_matmuls_agree_with_float_and_reference(digits, tmp_path):
    source = DATA / "digits_transformer.onnx"
    out = tmp_path / "transformer.dynamic.onnx"
    model = api.quantize(source, {"rows": digits.x_train[:64, 0]}, scheme="dynamic", output=out)
    ops = [node.op_type for node in model.graph]
    assert ops.count("MatMulInteger") >= 13 and "DynamicQuantizeLinear" in ops  # 12 linear layers + embedding
    assert "activation x activation" not in model.metadata_props[api.WEIGHT_RANGE_KEY]
    rows = digits.x_test[:, 0]
    expected, got = _outputs(source, rows), _outputs(out, rows)
    assert got.shape == expected.shape
    assert sqnr_db(expected, got) > 35
    assert np.mean(expected.argmax(1) == got.argmax(1)) >= 0.99
    batch = _outputs(out, rows[:32])  # ranges are found per run: compare runs of the same batch
    reference = ReferenceSession(out).run({"rows": rows[:32]})["logits"]
    # The float ops between the integer matmuls (LayerNorm, Softmax, attention MatMul) differ from ONNX
    # Runtime's vector kernels in the last bits (more so with AVX-512), and a run-time range can then put a
    # value one code over: agreement far above the quantization error (35 dB), not bitwise.
    assert sqnr_db(batch, reference) > 55
    assert np.array_equal(batch.argmax(1), reference.argmax(1))


def test_lstm_becomes_integer_lstm_and_reference_matches_at_batch_one(digits, tmp_path):
    source = DATA / "digits_lstm.onnx"
    out = tmp_path / "lstm.dynamic.onnx"
    model = api.quantize(source, scheme="dynamic", output=out)
    assert [n.op_type for n in model.graph].count("DynamicQuantizeLSTM") == 2
    rows = digits.x_test[:, 0]
    expected, got = _outputs(source, rows), _outputs(out, rows)
    assert sqnr_db(expected, got) > 40
    reference = ReferenceSession(out)
    for index in range(4):  # batch 1: ONNX Runtime quantizes each step's hidden state as the reference does
        one = rows[index:index + 1]
        ort_one = _outputs(out, one)
        np.testing.assert_allclose(reference.run({"rows": one})["logits"], ort_one, rtol=0,
                                   atol=1e-4 * np.abs(ort_one).max())
    ort_batch, batch = _outputs(out, rows[:32]), reference.run({"rows": rows[:32]})["logits"]
    assert np.array_equal(batch.argmax(1), ort_batch.argmax(1))
    assert sqnr_db(ort_batch, batch) > 40


def test_convolutions_follow_the_measurement_and_biases_are_corrected(digits, tmp_path):
    model = api.quantize(DATA / "digits_cnn.onnx", {"image": digits.x_train[:64]}, scheme="dynamic")
    note = model.metadata_props[api.WEIGHT_RANGE_KEY]
    assert "Convs" in note and "dB" in note and "biases of 4 layers corrected" in note
    without = api.quantize(DATA / "digits_cnn.onnx", scheme="dynamic")
    assert "no calibration samples" in without.metadata_props[api.WEIGHT_RANGE_KEY]
    assert "ConvInteger" not in [n.op_type for n in without.graph]
    assert all(node.reason.startswith("input not quantized") for node in api.float_nodes_of(without))


@pytest.mark.parametrize("flags, offset", [({"avx2"}, True), ({"avx2", "avx512_vnni"}, False)])
def test_weight_codes_follow_the_cpu(monkeypatch, flags, offset):
    monkeypatch.setattr(dynamic_step, "cpu_features", lambda: CpuFeatures("x86_64", frozenset(flags)))
    model = api.quantize(DATA / "digits_transformer.onnx", scheme="dynamic")
    weights = [v.const_value.numpy() for v in model.graph.initializers.values()
               if v.name.endswith("weight_quantized")]
    assert weights and all(w.dtype == (np.uint8 if offset else np.int8) for w in weights)
    note = model.metadata_props[api.WEIGHT_RANGE_KEY]
    assert ("uint8 + 128" in note) == offset
    seven = api.quantize(DATA / "digits_transformer.onnx", scheme="dynamic", weight_range="7bit")
    codes = [v.const_value.numpy() for v in seven.graph.initializers.values() if v.name.endswith("weight_quantized")]
    assert all(c.dtype == np.int8 and np.abs(c).max() <= 63 for c in codes)


def test_run_time_quantization_is_onnx_dynamic_quantize_linear():
    rng = np.random.default_rng(0)
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])
    graph = helper.make_graph([node], "g", [value_info("x", None)],
                              [value_info(n, None, onnx.TensorProto.UNDEFINED) for n in "qsz"])
    evaluator = onnx.reference.ReferenceEvaluator(helper.make_model(graph))
    for x in (rng.normal(0, 3, (4, 7)), rng.uniform(0.5, 2, (3, 5)), -rng.uniform(0, 1, 9), np.zeros(4)):
        x = x.astype(np.float32)
        q, s, z = evaluator.run(None, {"x": x})
        ours = quantize_at_run_time(x)
        assert np.array_equal(ours[0], q) and ours[1] == s and ours[2] == z


def test_bias_correction_cancels_the_mean_shift_of_rounded_weights():
    rng = np.random.default_rng(1)
    weight = rng.normal(0, 1, (6, 2, 3, 3)).astype(np.float32)  # 3 groups of 2 input channels
    rounded = (np.round(weight * 4) / 4).astype(np.float32)
    mean = rng.normal(0, 1, 6).astype(np.float32)
    x = np.broadcast_to(mean[None, :, None, None], (1, 6, 5, 5)).astype(np.float32)  # a flat input

    def conv(w: np.ndarray) -> np.ndarray:
        model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], group=3)], [value_info("x", [1, 6, 5, 5])],
                           [value_info("y", [1, 6, 3, 3])], [tensor("w", w)])
        return OrtSession(ir.from_proto(model)).run({"x": x})["y"]

    exact, shifted = conv(weight), conv(rounded)
    np.testing.assert_allclose((shifted - exact).mean(axis=(0, 2, 3)),
                               conv_output_shift(rounded - weight, mean, group=3), atol=1e-4)
    w = rng.normal(0, 1, (5, 4)).astype(np.float32)
    error = rng.normal(0, 0.01, (5, 4)).astype(np.float32)
    rows = np.tile(mean[:5], (3, 1))
    np.testing.assert_allclose(rows @ (w + error) - rows @ w, np.tile(matmul_output_shift(error, mean[:5]), (3, 1)),
                               atol=1e-5)


def test_cli_dynamic_needs_no_calibration(tmp_path, capsys):
    out = tmp_path / "lstm.int8.onnx"
    assert main(["quantize", str(DATA / "digits_lstm.onnx"), "--scheme", "dynamic", "-o", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "x0.2" in printed and out.exists()

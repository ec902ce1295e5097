"""eightbit inspect: per-tensor figures named after the float model, worst first."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

import eightbit
from conftest import make_model, tensor, value_info
from eightbit.api import load_samples
from eightbit.backends import OrtSession
from eightbit.ir import as_model
from eightbit.measure.metrics import sqnr_db
from eightbit.metadata import BIAS_CORRECTION_KEY
from eightbit.passes.hard_gates import HardGatesAsConvolutions
from eightbit.report.inspect import inspect_models
from test_cli import assert_refused, run_cli, unchanged

OUTLIER = 1000.0


def chain_cnn(outlier: bool, seed: int = 3) -> onnx.ModelProto:
    """conv_a -> relu -> conv_b -> relu -> conv_c -> relu -> GAP -> Flatten -> Gemm. With `outlier`,
    conv_b's channel 0 is OUTLIER times larger and conv_c divides it back: the float model computes
    the same function, but one channel sets the range of conv_b's output."""
    rng = np.random.default_rng(seed)
    w_a = rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32)
    w_b, b_b = rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), rng.normal(0, 0.1, 8).astype(np.float32)
    w_c = rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32)
    if outlier:
        w_b[0] *= OUTLIER
        b_b[0] *= OUTLIER
        w_c[:, 0] /= OUTLIER
    inits = [
        tensor("w_a", w_a), tensor("b_a", rng.normal(0, 0.1, 8).astype(np.float32)),
        tensor("w_b", w_b), tensor("b_b", b_b),
        tensor("w_c", w_c), tensor("b_c", rng.normal(0, 0.1, 8).astype(np.float32)),
        tensor("fc_w", rng.normal(0, 0.3, (10, 8)).astype(np.float32)),
        tensor("fc_b", rng.normal(0, 0.1, 10).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_a", "b_a"], ["ca"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Relu", ["ca"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "w_b", "b_b"], ["cb"], pads=[1, 1, 1, 1], name="conv_b"),
        helper.make_node("Relu", ["cb"], ["rb"], name="relu_b"),
        helper.make_node("Conv", ["rb", "w_c", "b_c"], ["cc"], pads=[1, 1, 1, 1], name="conv_c"),
        helper.make_node("Relu", ["cc"], ["rc"], name="relu_c"),
        helper.make_node("GlobalAveragePool", ["rc"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    return make_model(nodes, [value_info("x", ["batch", 3, 12, 12])], [value_info("logits", ["batch", 10])], inits)


@pytest.fixture
def images():
    return {"x": np.random.default_rng(4).normal(0, 1, (32, 3, 12, 12)).astype(np.float32)}


def _inspect(float_proto, images, impact=False, **options):
    options.setdefault("min_sqnr", None)  # the default floor would keep the broken layer float: diagnose it as made
    quantized = eightbit.quantize(float_proto, images, **options)
    samples = load_samples(images, as_model(float_proto))
    return inspect_models(float_proto, quantized, samples, impact=impact), quantized


def test_own_and_accumulated_figures_are_measured_against_the_float_tensors(images):
    inspection, quantized = _inspect(chain_cnn(outlier=False), images)
    by_name = {report.name: report for report in inspection.tensors}
    # The model input is quantized directly: its accumulated error is its own error.
    x = by_name["x"]
    assert x.accumulated.sqnr_db == pytest.approx(x.own.sqnr_db)
    # "rb" (conv_b + fused relu) recomputed by hand: float tensor vs its fake-quantized self.
    float_model = chain_cnn(outlier=False)
    float_model.graph.output.append(value_info("rb", ["batch", 8, 12, 12]))
    rb = OrtSession(as_model(float_model)).run({"x": images["x"]}, ["rb"])["rb"]
    grid = by_name["rb"].grid
    q = np.clip(np.rint(rb / np.float32(grid.scale)) + grid.zero_point, grid.qmin, grid.qmax)
    assert by_name["rb"].own.sqnr_db == pytest.approx(sqnr_db(rb, grid.scale * (q - grid.zero_point)), abs=1e-6)
    assert by_name["rb"].layer == "conv_b" and by_name["rb"].op_type == "Conv"
    # Upstream error only adds: no tensor after the input arrives better than its own grid allows, within noise.
    for report in inspection.tensors:
        assert report.accumulated.sqnr_db <= report.own.sqnr_db + 1.0
    assert 20 < inspection.outputs["logits"].sqnr_db < 60


def test_a_layer_with_an_outlier_channel_is_named_first(images):
    inspection, _ = _inspect(chain_cnn(outlier=True), images)
    worst = inspection.tensors[0]
    assert (worst.name, worst.layer) == ("rb", "conv_b")
    assert worst.own_channels.median_db < 10 < worst.own.sqnr_db  # the whole-tensor figure hides it
    assert "one channel sets its range" in worst.diagnosis()
    healthy, _ = _inspect(chain_cnn(outlier=False), images)
    assert {r.name: r for r in healthy.tensors}["rb"].own_channels.median_db > 30


def test_impact_ranks_the_outlier_layer_first(images):
    inspection, quantized = _inspect(chain_cnn(outlier=True), images, impact=True)
    # Bias correction repaired much of the damage; the impact is measured as quantization alone leaves it.
    assert BIAS_CORRECTION_KEY in quantized.metadata_props
    assert inspection.tensors[0].name == "rb"
    assert inspection.tensors[0].impact_db > 3.0
    assert all(r.impact_db is not None for r in inspection.tensors)


def test_a_softmax_behind_an_identity_is_measured_on_its_input_in_both_models(images):
    """The quantized model loses the float model's Identity: both must still be compared before the softmax."""
    model = chain_cnn(outlier=False)
    model.graph.output[0].name = "probabilities"
    model.graph.node.extend([helper.make_node("Softmax", ["logits"], ["soft"], name="softmax"),
                             helper.make_node("Identity", ["soft"], ["probabilities"], name="identity")])
    inspection, _ = _inspect(model, images)
    assert list(inspection.outputs) == ["logits"]
    assert 20 < inspection.outputs["logits"].sqnr_db < 60


def test_power_of_two_model_shows_exponents_and_bias_width(images):
    inspection, _ = _inspect(chain_cnn(outlier=False), images, scheme="po2")
    # Symmetric grids keep the Relu: conv_b's own output is quantized as "cb".
    row = {r.name: r for r in inspection.tensors}["cb"].as_dict()
    assert row["layer"] == "conv_b"
    assert isinstance(row["k"], int) and row["input_k"] and all(isinstance(k, int) for k in row["input_k"])
    assert row["weights"]["k"] and all(isinstance(k, int) for k in row["weights"]["k"])
    assert row["bias_bits"] == 16 and row["bias_saturated"] == 0
    assert row["scale"] == 2.0 ** row["k"]


def test_cli_inspect_writes_the_report_and_plot(tmp_path, images, capsys):
    float_path, quant_path, data = tmp_path / "chain.onnx", tmp_path / "chain.int8.onnx", tmp_path / "x.npz"
    onnx.save(chain_cnn(outlier=True), float_path)
    np.savez(data, **images)
    assert run_cli("quantize", str(float_path), "--calibration", str(data), "-o", str(quant_path),
                   "--min-sqnr", "off", "--no-report").returncode == 0
    html, png = tmp_path / "report.html", tmp_path / "sqnr.png"
    result = run_cli("inspect", str(float_path), str(quant_path), "--data", str(data), "--html", str(html),
                     "--png", str(png))
    assert result.returncode == 0, result.stderr
    assert "worst: rb (conv_b): one channel sets its range" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = html.read_text()
    assert "data:image/png;base64," in page and "conv_b (Conv)" in page
    result = run_cli("inspect", str(float_path), str(quant_path), "--data", str(data), "--json")
    rows = json.loads(result.stdout)["tensors"]
    assert rows[0]["tensor"] == "rb" and rows[0]["layer"] == "conv_b"


def test_cli_inspect_refuses_bad_input(tmp_path, images):
    float_path, data = tmp_path / "chain.onnx", tmp_path / "x.npz"
    onnx.save(chain_cnn(outlier=False), float_path)
    np.savez(data, **images)
    before = float_path.read_bytes()
    # A float model where the quantized one should be.
    assert_refused(run_cli("inspect", str(float_path), str(float_path), "--data", str(data)),
                   "quantizes no activation")
    # A report that would overwrite an input.
    assert_refused(run_cli("inspect", str(float_path), str(float_path), "--data", str(data), "--html",
                           str(float_path)), "overwrite an input")
    unchanged(float_path, before)


def test_a_tensor_read_only_by_a_saturating_activation_is_measured_after_it(images):
    """eq. 8a narrows such a tensor's grid to the activation's live range: most of its values are
    clipped, harmlessly; the figures are taken after the activation."""
    rng = np.random.default_rng(7)
    inits = [tensor("w", rng.normal(0, 3.0, (4, 3, 3, 3)).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Sigmoid", ["c"], ["gate"], name="gate")]
    model = make_model(nodes, [value_info("x", ["batch", 3, 12, 12])], [value_info("gate", ["batch", 4, 12, 12])],
                       inits)
    inspection, _ = _inspect(model, images)
    row = {r.name: r for r in inspection.tensors}["c"]
    assert row.read_through == "Sigmoid"
    assert row.grid.high < row.high  # the grid stops where the activation saturates, short of the values
    assert row.clipped_fraction == 0.0 and row.own.sqnr_db > 30


def test_a_tensor_read_by_a_hard_swish_in_gate_form_is_measured_after_it(images):
    """The gate convolution and the Mul read the tensor; eq. 8a clips it below -3, where hard-swish is 0."""
    rng = np.random.default_rng(8)
    inits = [tensor("w", rng.normal(0, 3.0, (4, 3, 3, 3)).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("HardSwish", ["c"], ["swished"], name="swish")]
    model = as_model(make_model(nodes, [value_info("x", ["batch", 3, 12, 12])],
                                [value_info("swished", ["batch", 4, 12, 12])], inits, opset=14))
    HardGatesAsConvolutions(("HardSwish",))(model)
    gated = ir.to_proto(model)
    inspection, quantized = _inspect(gated, images)
    readers = {use.node.op_type for node in quantized.graph if node.op_type == "DequantizeLinear"
               and node.inputs[0].producer() is not None and node.inputs[0].producer().inputs[0].name == "c"
               for use in node.outputs[0].uses()}
    assert readers == {"Conv", "Mul"}  # the gate form, as measured here
    row = {r.name: r for r in inspection.tensors}["c"]
    assert row.read_through == "HardSwish"
    assert row.low < row.grid.low  # values below the grid: hard-swish is 0 there
    assert row.clipped_fraction == 0.0 and row.own.sqnr_db > 30

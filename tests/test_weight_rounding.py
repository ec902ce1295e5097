"""Weight codes chosen from the calibration inputs (eq. 34) and the moments they are chosen from."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from conftest import make_model, small_cnn, tensor, value_info
from eightbit import api
from eightbit.calibrate import moments as moments_module
from eightbit.calibrate.moments import input_moments, weighted_nodes
from eightbit.calibrate.runner import run_pass
from eightbit.config import IntegerFormat
from eightbit.datasets import input_specs, samples_from_arrays
from eightbit.ir import as_model
from eightbit.passes.weight_rounding import rounded_codes
from eightbit.pipeline.options import MARGIN_DB
from eightbit.quant.rounding import error_feedback_codes, output_error

S7 = IntegerFormat(bits=8, signed=True, symmetric=True, narrow=True, value_bits=7)


def _nearest(weights, scale):
    return np.clip(np.rint(weights / scale[:, None]), S7.qmin, S7.qmax)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(16, 64))
def test_output_error_is_below_nearest_rounding(seed, columns):
    """Greedy, so not for every single row; over a layer of 32 rows with correlated inputs, lower."""
    rng = np.random.default_rng(seed)
    rows = 32
    mixing = rng.normal(size=(columns, columns)) * rng.uniform(0.1, 2.0, columns)
    inputs = rng.normal(size=(400, columns)) @ mixing  # correlated inputs
    moments = inputs.T @ inputs / len(inputs)
    weights = rng.normal(size=(rows, columns))
    scale = np.abs(weights).max(axis=1) / S7.qmax
    codes = error_feedback_codes(weights, moments, scale, np.zeros(rows), S7)
    assert codes.min() >= S7.qmin and codes.max() <= S7.qmax and np.array_equal(codes, np.rint(codes))
    chosen = output_error(weights, codes * scale[:, None], moments)
    nearest = output_error(weights, _nearest(weights, scale) * scale[:, None], moments)
    assert chosen < nearest


def _one_column_at_a_time(weights, moments, scale):
    """Eq. 34 without blocks: U from H⁻¹ directly, each column's error moved onto every later column at once."""
    h = moments + np.eye(len(moments)) * 0.01 * np.mean(np.diag(moments))
    spread = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: H⁻¹ = Uᵀ·U
    w = np.array(weights, dtype=np.float64)
    codes = np.empty_like(w)
    for c in range(w.shape[1]):
        codes[:, c] = np.clip(np.rint(w[:, c] / scale), S7.qmin, S7.qmax)
        error = (w[:, c] - codes[:, c] * scale) / spread[c, c]
        w[:, c + 1:] -= np.outer(error, spread[c, c + 1:])
    return codes


def test_blocks_of_columns_give_the_codes_of_one_column_at_a_time():
    """Over three blocks of columns: the later blocks take the earlier blocks' errors as each column would."""
    rng = np.random.default_rng(3)
    columns, rows = 300, 24
    inputs = rng.normal(size=(900, columns)) @ rng.normal(size=(columns, columns))
    moments = inputs.T @ inputs / len(inputs)
    weights = rng.normal(size=(rows, columns))
    scale = np.abs(weights).max(axis=1) / S7.qmax
    codes = error_feedback_codes(weights, moments, scale, np.zeros(rows), S7)
    expected = _one_column_at_a_time(weights, moments, scale)
    assert np.mean(codes != expected) < 1e-3  # float rounding may move a code that sits on a half step
    assert output_error(weights, codes * scale[:, None], moments) == pytest.approx(
        output_error(weights, expected * scale[:, None], moments), rel=1e-3)


def test_uncorrelated_and_dead_inputs_give_nearest_codes():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(6, 10))
    scale = np.abs(weights).max(axis=1) / S7.qmax
    moments = np.diag(rng.uniform(0.5, 2.0, 10))
    np.testing.assert_array_equal(error_feedback_codes(weights, moments, scale, np.zeros(6), S7),
                                  _nearest(weights, scale))
    # An input that was always zero: its codes cost nothing here, so they stay nearest for inputs that move.
    moments = rng.normal(size=(10, 10))
    moments = moments @ moments.T
    moments[3, :] = moments[:, 3] = 0.0
    codes = error_feedback_codes(weights, moments, scale, np.zeros(6), S7)
    np.testing.assert_array_equal(codes[:, 3], _nearest(weights, scale)[:, 3])
    assert not np.array_equal(codes, _nearest(weights, scale))  # the correlated inputs' codes did move


@pytest.mark.parametrize("attributes", [
    {"pads": [1, 0, 2, 1], "strides": [2, 1]},
    {"pads": [2, 2, 2, 2], "dilations": [2, 2], "group": 2},
    {"auto_pad": "SAME_UPPER", "strides": [2, 2], "group": 4},
])
def test_conv_moments_give_the_mean_squared_output(attributes):
    """For a Conv without bias, mean over output positions of Σ_o y_o² is tr(W_g H_g W_gᵀ) summed over groups."""
    rng = np.random.default_rng(1)
    groups = attributes.get("group", 1)
    w = rng.normal(size=(8, 4 // groups, 3, 3)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attributes)
    model = make_model([conv], [value_info("x", [None, 4, 9, 11])], [value_info("y", [None, 8, None, None])],
                       [tensor("w", w)])
    x = rng.normal(size=(3, 4, 9, 11)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ir_model = as_model(model)
    samples = samples_from_arrays({"x": x}, input_specs(ir_model))
    moments = input_moments(ir_model, weighted_nodes(ir_model.graph, list(ir_model.graph)), samples,
                            show_progress=False)["conv"]
    per_group = 8 // groups
    predicted = sum(output_error(w[g * per_group:(g + 1) * per_group].reshape(per_group, -1), 0, moments[g])
                    for g in range(groups))
    measured = float((y.astype(np.float64) ** 2).sum(axis=1).mean())
    assert predicted == pytest.approx(measured, rel=1e-4)


@pytest.mark.parametrize(("most", "per_column", "thinned", "step"), [
    (20, 10**6, True, 3),  # 130 positions, at most 20 a sample: every 3rd row and column
    (4096, 1, True, 4),  # 27 columns, 2 samples: 14 fields a sample suffice, so every 4th
    (4096, 1, False, 1),  # not thinned (the weights schemes' input_moments): every field
])
def test_large_feature_maps_give_the_moments_of_every_kth_row_and_column(monkeypatch, most, per_column, thinned,
                                                                         step):
    rng = np.random.default_rng(6)
    w = rng.normal(size=(5, 3, 3, 3)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    model = make_model([conv], [value_info("x", [None, 3, 10, 13])], [value_info("y", [None, 5, 10, 13])],
                       [tensor("w", w)])
    x = rng.normal(size=(2, 3, 10, 13)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    monkeypatch.setattr(moments_module, "POSITIONS_PER_SAMPLE", most)
    monkeypatch.setattr(moments_module, "FIELDS_PER_COLUMN", per_column)
    ir_model = as_model(model)
    samples = samples_from_arrays({"x": x}, input_specs(ir_model))
    moment_pass = moments_module.MomentPass(weighted_nodes(ir_model.graph, list(ir_model.graph)), samples.count,
                                            thinned=thinned)
    run_pass(ir_model, samples, [moment_pass], show_progress=False)
    moments = moment_pass.moments()["conv"]
    if not thinned:  # what the weights schemes take
        np.testing.assert_array_equal(moments, input_moments(
            ir_model, weighted_nodes(ir_model.graph, list(ir_model.graph)), samples, show_progress=False)["conv"])
    predicted = output_error(w.reshape(5, -1), 0, moments[0])
    kept = y[:, :, ::step, ::step].astype(np.float64)
    assert predicted == pytest.approx(float((kept ** 2).sum(axis=1).mean()), rel=1e-4)


def test_wide_layers_keep_the_diagonal_blocks_of_their_moments(monkeypatch):
    rng = np.random.default_rng(4)
    w = rng.normal(size=(20, 6)).astype(np.float32)  # MatMul: 20 inputs, 6 outputs
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = as_model(make_model([node], [value_info("x", [None, 20])], [value_info("y", [None, 6])],
                                [tensor("w", w)]))
    x = (rng.normal(size=(50, 20)) @ rng.normal(size=(20, 20))).astype(np.float32)  # correlated inputs
    samples = samples_from_arrays({"x": x}, input_specs(model))
    nodes = weighted_nodes(model.graph, list(model.graph))
    whole = input_moments(model, nodes, samples, show_progress=False)["fc"]
    monkeypatch.setattr(moments_module, "DIAGONAL_BLOCK", 8)
    blocks = input_moments(model, nodes, samples, show_progress=False)["fc"]
    assert whole.shape == (1, 20, 20) and blocks.shape == (1, 3, 8, 8)
    for block, width in enumerate((8, 8, 4)):
        inputs = slice(8 * block, 8 * block + width)
        np.testing.assert_allclose(blocks[0, block, :width, :width], whole[0][inputs, inputs], rtol=1e-6)
    assert not blocks[0, 2, 4:].any() and not blocks[0, 2, :, 4:].any()
    # each block of inputs is rounded on its own, with its block of H
    scale = np.abs(w).max(axis=0) / S7.qmax
    codes = rounded_codes(nodes[0], w, blocks, scale, np.zeros(6), S7)
    rows = w.T.astype(np.float64)
    for block, width in enumerate((8, 8, 4)):
        inputs = slice(8 * block, 8 * block + width)
        expected = error_feedback_codes(rows[:, inputs], whole[0][inputs, inputs], scale, np.zeros(6), S7)
        np.testing.assert_array_equal(codes[inputs].T, expected)


def _sqnr(float_path, quantized, x) -> float:
    """Output SQNR (dB) of the quantized onnx_ir model against the float model at `float_path`, on `x`."""
    def run(model) -> np.ndarray:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0].astype(np.float64)

    expected, got = run(str(float_path)), run(ir.to_proto(quantized).SerializeToString())
    return 10 * np.log10((expected ** 2).sum() / ((expected - got) ** 2).sum())


def test_weights_scheme_with_calibration_chooses_codes_that_lose_less(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save_model(small_cnn(seed=3, channels=16, softmax=False), path)
    rng = np.random.default_rng(2)
    calibration = {"x": rng.normal(size=(64, 3, 16, 16)).astype(np.float32)}
    held_out = rng.normal(size=(32, 3, 16, 16)).astype(np.float32)
    chosen = api.quantize(path, calibration, scheme="weights")
    nearest = api.quantize(path, calibration, scheme="weights", weight_rounding="nearest")
    assert "gptq" in chosen.metadata_props[api.WEIGHT_RANGE_KEY]
    assert "gptq" not in nearest.metadata_props[api.WEIGHT_RANGE_KEY]
    gain = _sqnr(path, chosen, held_out) - _sqnr(path, nearest, held_out)
    assert gain > 1.0, f"eq. 34 rounding gained only {gain:.2f} dB on held-out inputs"
    # the static scheme can ask for it; its codes stay in the 8-bit range and the model runs
    static = api.quantize(path, calibration, weight_rounding="gptq")
    assert "gptq" in static.metadata_props[api.WEIGHT_RANGE_KEY]
    assert _sqnr(path, static, held_out) > 15


def test_unknown_weight_rounding_is_refused(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save_model(small_cnn(), path)
    with pytest.raises(api.InputError, match="unknown weight rounding"):
        api.quantize(path, scheme="weights", weight_rounding="best")
    with pytest.raises(api.InputError, match="needs --calibration"):
        api.quantize(path, scheme="weights", weight_rounding="gptq")
    calibration = {"x": np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)}
    with pytest.raises(api.InputError, match="needs --calibration"):
        api.quantize(path, calibration, scheme="dynamic", weight_rounding="gptq")
    # without samples the weights scheme rounds to nearest, as it always did
    assert "gptq" not in api.quantize(path, scheme="weights").metadata_props[api.WEIGHT_RANGE_KEY]


def test_static_default_measures_both_roundings_and_keeps_the_better(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save_model(small_cnn(seed=3, channels=16, softmax=False), path)
    rng = np.random.default_rng(2)
    calibration = {"x": rng.normal(size=(64, 3, 16, 16)).astype(np.float32)}
    model = api.quantize(path, calibration, speed_check=False)
    note = model.metadata_props[api.WEIGHT_RANGE_KEY]
    found = re.search(r"auto\): (-?[\d.]+) dB output SQNR on the calibration samples, rounded to nearest "
                      r"(-?[\d.]+) dB: (chosen codes taken|nearest kept)", note)
    assert found, note
    chosen_db, nearest_db, verdict = float(found[1]), float(found[2]), found[3]
    assert (verdict == "chosen codes taken") == (chosen_db >= nearest_db + MARGIN_DB)
    # the model kept is the one measured: rebuilt with that rounding forced, the same bytes
    forced = api.quantize(path, calibration, weight_rounding="gptq" if verdict.startswith("chosen") else "nearest",
                          speed_check=False)
    def weights(m: ir.Model) -> list[bytes]:
        return [t.SerializeToString() for t in ir.to_proto(m).graph.initializer]

    assert weights(model) == weights(forced)
    # without samples there is nothing to measure: nearest, no note
    assert "auto" not in api.quantize(path, scheme="weights").metadata_props[api.WEIGHT_RANGE_KEY]


def test_the_calibration_pass_takes_the_moments_of_the_held_out_batches_as_their_own_pass_does():
    """A MomentPass fed by the ranges' pass over every sample, on the batches holding the held-out samples, sums
    exactly what a pass over those samples alone sums (one float pass instead of two, the same codes)."""
    from eightbit.calibrate.means import ChannelSums
    from eightbit.calibrate.moments import MomentPass
    from eightbit.calibrate.runner import collect_ranges, run_pass
    from eightbit.pipeline.static import _batches_within, held_out_from_checks

    model = as_model(small_cnn())
    rng = np.random.default_rng(3)
    spec = input_specs(model)[0]
    samples = samples_from_arrays({spec.name: rng.normal(size=(140, *spec.shape[1:])).astype(np.float32)},
                                  input_specs(model))
    held_out = held_out_from_checks(samples)
    assert 0 < held_out.count < samples.count
    nodes = weighted_nodes(model.graph, list(model.graph))
    outputs = {node.outputs[0].name: 1 for node in nodes}
    fed = MomentPass(nodes, held_out.count, ChannelSums(outputs), _batches_within(held_out, samples))
    observed = [node.outputs[0].name for node in model.graph][:2]
    collect_ranges(model, observed, samples, show_progress=False, consumers=[fed])
    alone = MomentPass(nodes, held_out.count, ChannelSums(outputs))
    run_pass(model, held_out, [alone], show_progress=False)
    assert fed.taken == alone.taken == held_out.number_of_batches()
    got, expected = fed.moments(), alone.moments()
    assert got.keys() == expected.keys() and got
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    for name, mean in alone.sums.means().items():
        np.testing.assert_array_equal(fed.sums.means()[name], mean)

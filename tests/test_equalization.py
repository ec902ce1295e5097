"""Cross-layer equalization before depthwise convolutions (eq. 35, 35b): same float function, finer grids."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import eightbit
from conftest import make_model, tensor, value_info
from eightbit.api import WEIGHT_RANGE_KEY, load_samples
from eightbit.backends import OrtSession
from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.calibrate.means import channel_ranges
from eightbit.ir import as_model
from eightbit.measure.metrics import sqnr_db
from eightbit.metadata import EQUALIZATION_KEY
from eightbit.passes.equalize_channels import equalize_channels, equalize_weights, find_pairs
from eightbit.prepare import prepare
from eightbit.quant.equalization import (
    HEADROOM,
    MAX_FACTOR,
    equalizing_factors,
    swish_equalizing_factors,
    weight_equalizing_factors,
)
from eightbit.report.inspect import inspect_models
from test_cli import run_cli


def _separable(seed: int, spread: np.ndarray, bias_spread: np.ndarray, activation: list[onnx.NodeProto],
               extra: list[onnx.TensorProto], column_spread: np.ndarray | None = None) -> onnx.ModelProto:
    """pointwise conv "expand" (its channel i times spread_i, its bias times bias_spread_i) -> `activation`, from
    "ca" to what the depthwise conv reads (its last output) -> depthwise conv (filter i divided by spread_i, and
    with its bias times column_spread_i) -> relu -> pointwise conv "project" (column i divided by
    column_spread_i) -> GAP -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    columns = np.ones(16, np.float32) if column_spread is None else column_spread
    w_a = rng.normal(0, 0.5, (16, 3, 1, 1)).astype(np.float32) * spread[:, None, None, None]
    b_a = rng.normal(0, 0.05, 16).astype(np.float32) * bias_spread
    w_d = rng.normal(0, 0.5, (16, 1, 3, 3)).astype(np.float32) / spread[:, None, None, None]
    b_d = rng.normal(0, 0.1, 16).astype(np.float32)
    w_c = rng.normal(0, 0.3, (8, 16, 1, 1)).astype(np.float32)
    inits = [
        tensor("w_a", w_a), tensor("b_a", b_a), *extra,
        tensor("w_d", w_d * columns[:, None, None, None]), tensor("b_d", b_d * columns),
        tensor("w_c", w_c / columns[None, :, None, None]),
        tensor("b_c", rng.normal(0, 0.1, 8).astype(np.float32)),
        tensor("fc_w", rng.normal(0, 0.3, (10, 8)).astype(np.float32)),
        tensor("fc_b", rng.normal(0, 0.1, 10).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_a", "b_a"], ["ca"], name="expand"),
        *activation,
        helper.make_node("Conv", [activation[-1].output[0], "w_d", "b_d"], ["cd"], pads=[1, 1, 1, 1], group=16,
                         name="depthwise"),
        helper.make_node("Relu", ["cd"], ["rd"], name="relu_d"),
        helper.make_node("Conv", ["rd", "w_c", "b_c"], ["cc"], name="project"),
        helper.make_node("GlobalAveragePool", ["cc"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    return make_model(nodes, [value_info("x", ["batch", 3, 10, 10])], [value_info("logits", ["batch", 10])], inits)


def separable_cnn(seed: int = 0) -> onnx.ModelProto:
    """expand -> relu -> depthwise ..., with the first conv's channels spanning two orders of magnitude (what
    batch-norm folding often leaves)."""
    spread = np.geomspace(1.0, 0.01, 16).astype(np.float32)
    return _separable(seed, spread, spread, [helper.make_node("Relu", ["ca"], ["ra"], name="relu_a")], [])


def separable_cnn_with_wide_columns(seed: int = 0) -> onnx.ModelProto:
    """separable_cnn whose depthwise output channels, and so the columns of the conv after it, also span two
    orders of magnitude (the other way round)."""
    spread = np.geomspace(1.0, 0.01, 16).astype(np.float32)
    return _separable(seed, spread, spread, [helper.make_node("Relu", ["ca"], ["ra"], name="relu_a")], [],
                      column_spread=spread[::-1].copy())


def separable_swish_cnn(seed: int = 0) -> onnx.ModelProto:
    """expand -> hard-swish -> Mul(0.7) -> Add(0.05) -> depthwise ...: the block of PP-LCNet (hard-swish, then a
    learned scale and shift), with a few of the first conv's channels reaching far beyond the others, and the
    depthwise filters on the others large."""
    spread = np.where(np.arange(16) < 3, 12.0, 0.4).astype(np.float32)
    swish = [
        helper.make_node("HardSwish", ["ca"], ["hs"], name="swish"),
        helper.make_node("Mul", ["lab_scale", "hs"], ["scaled"], name="lab_mul"),
        helper.make_node("Add", ["scaled", "lab_shift"], ["shifted"], name="lab_add"),
    ]
    scale_and_shift = [tensor("lab_scale", np.array([0.7], np.float32)),
                       tensor("lab_shift", np.array([0.05], np.float32))]
    return _separable(seed, spread, np.ones(16, np.float32), swish, scale_and_shift)


@pytest.fixture
def images():
    rng = np.random.default_rng(5)
    return {"x": rng.normal(0, 1, (32, 3, 10, 10)).astype(np.float32)}


def test_factors_fill_the_tensors_grid_within_bounds():
    low = np.array([0.0, 0.0, 0.0, -2.0, 0.0, 0.0])
    high = np.array([8.0, 1.0, 0.0, 1.0, 1e-4, 6.0])
    # 8 / 1 / HEADROOM; silent: 1; held by its low end (-2 of -2); bounded; already within HEADROOM: 1
    np.testing.assert_allclose(equalizing_factors(low, high), [1.0, 8.0 / HEADROOM, 1.0, 1.0, MAX_FACTOR, 1.0])
    # a channel reaching below zero is limited by the tensor's lowest value as well
    np.testing.assert_allclose(equalizing_factors(np.array([-8.0, -1.0]), np.array([1.0, 0.1])), [1.0, 8.0 / HEADROOM])


def test_equalized_model_computes_the_same_function(images):
    model = prepare(as_model(separable_cnn()))
    pairs = find_pairs(model.graph)
    assert [(p.producer.name, p.consumer.name, p.measured.name) for p in pairs] == [("expand", "depthwise", "ra")]
    samples = load_samples(images, model)
    ranges = channel_ranges(model, ["ra"], samples)
    def run() -> dict[str, np.ndarray]:
        wanted = [v for node in model.graph for v in node.outputs if v.name in ("logits", "ra")]
        return session_with_outputs(model, wanted, 1).run(images, ["logits", "ra"])

    before = run()
    factors = equalize_channels(model.graph, ranges)
    assert set(factors) == {"ca", "ra"}
    after = run()
    np.testing.assert_allclose(after["logits"], before["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(after["ra"], before["ra"] * factors["ra"].reshape(-1, 1, 1), rtol=1e-4, atol=1e-6)
    # every channel that moved now reaches 1/HEADROOM of the tensor's largest value, or the bound held it back
    reach = after["ra"].max(axis=(0, 2, 3))
    moved = factors["ra"] > 1.0
    assert moved.sum() >= 8
    np.testing.assert_allclose(reach[moved & (factors["ra"] < MAX_FACTOR)], reach.max() / HEADROOM, rtol=1e-4)


def _quantized_both_ways(float_model: onnx.ModelProto, images: dict[str, np.ndarray], **options):
    """The model quantized without and with equalization (nearest codes, no bias correction, no budget,
    `options`), and a function giving a model's output SQNR on other samples."""
    options.setdefault("min_sqnr", None)  # the default floor would keep float what equalization is to repair
    rng = np.random.default_rng(6)
    held_out = {"x": rng.normal(0, 1, (32, 3, 10, 10)).astype(np.float32)}
    plain = eightbit.quantize(float_model, images, weight_rounding="nearest", bias_correction=False,
                              equalization=False, **options)
    equalized = eightbit.quantize(float_model, images, weight_rounding="nearest", bias_correction=False, **options)
    expected = OrtSession(as_model(float_model)).run(held_out, ["logits"])["logits"]

    def output_db(model) -> float:
        return sqnr_db(expected, OrtSession(model).run(held_out, ["logits"])["logits"])

    return plain, equalized, output_db


def test_quantize_measures_equalization_and_inspect_reads_through_it(images):
    float_model = separable_cnn()
    plain, equalized, output_db = _quantized_both_ways(float_model, images)
    assert EQUALIZATION_KEY not in plain.metadata_props
    assert "equalization kept" in equalized.metadata_props[WEIGHT_RANGE_KEY]
    assert output_db(equalized) > output_db(plain) + 3.0
    # inspect measures the equalized tensor against the float one, in the float model's units: on the
    # calibration samples (no clipping) its grid now keeps far more of it
    samples = load_samples(images, as_model(float_model))
    rows = {r.name: r for r in inspect_models(float_model, equalized, samples).tensors}
    plain_rows = {r.name: r for r in inspect_models(float_model, plain, samples).tensors}
    assert rows["ra"].clipped == plain_rows["ra"].clipped == 0
    assert rows["ra"].own.sqnr_db > plain_rows["ra"].own.sqnr_db + 3.0
    assert rows["ra"].accumulated.sqnr_db <= rows["ra"].own.sqnr_db + 1.0


def test_equalization_is_on_by_default_and_needs_samples(images):
    assert "equalization kept" in eightbit.quantize(separable_cnn(), images).metadata_props[WEIGHT_RANGE_KEY]
    assert "equaliz" not in eightbit.quantize(separable_cnn(), images,
                                              equalization=False).metadata_props[WEIGHT_RANGE_KEY]
    # without calibration samples there is nothing to measure ranges on: the weights scheme ignores it
    assert EQUALIZATION_KEY not in eightbit.quantize(separable_cnn(), scheme="weights",
                                                     equalization=True).metadata_props


def test_swish_factors_scale_down_the_channels_above_the_level_that_costs_least():
    # three channels reach 10, thirteen reach 1; the depthwise filters on the small ones carry the signal
    high = np.array([10.0] * 3 + [1.0] * 13)
    low = np.full(16, -0.375)
    power = np.array([0.01] * 3 + [1.0] * 13)
    factors = swish_equalizing_factors(low, high, power)
    np.testing.assert_allclose(factors, [0.1] * 3 + [1.0] * 13, rtol=1e-6)
    # where the wide channels' filters carry the signal instead, scaling them down costs more than it saves
    np.testing.assert_allclose(swish_equalizing_factors(low, high, np.array([100.0] * 3 + [0.01] * 13)), np.ones(16))
    # channels that never rose above zero are left alone; none is scaled up
    mixed = swish_equalizing_factors(np.array([-0.375, -0.2, -0.375]), np.array([8.0, 0.0, 1.0]), np.ones(3))
    assert mixed[1] == 1.0 and np.all(mixed <= 1.0)


def test_equalized_swish_block_computes_the_same_function(images):
    model = prepare(as_model(separable_swish_cnn()))
    pairs = find_pairs(model.graph)
    # preparing folded the scale into the depthwise filters and moved the shift before it (b / a)
    shifted = "shifted_before_scale"
    assert [(p.producer.name, p.consumer.name, p.measured.name) for p in pairs] == [("expand", "depthwise", shifted)]
    samples = load_samples(images, model)
    ranges = channel_ranges(model, [shifted], samples)

    def run() -> dict[str, np.ndarray]:
        wanted = [v for node in model.graph for v in node.outputs if v.name in ("logits", shifted)]
        return session_with_outputs(model, wanted, 1).run(images, ["logits", shifted])

    before = run()
    factors = equalize_channels(model.graph, ranges)
    assert set(factors) == {"ca", "hs", shifted}
    scale = factors[shifted]
    # none scaled up, the wide channels scaled down the most
    assert np.all(scale <= 1.0) and scale.max() == 1.0 and scale[:3].max() < scale[3:].min()
    after = run()
    np.testing.assert_allclose(after["logits"], before["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(after[shifted], before[shifted] * scale.reshape(-1, 1, 1), rtol=1e-4, atol=1e-5)
    # the hard-swish became its gate form with slope 1/(6 f_c), the shift one constant per channel
    ops = [node.op_type for node in model.graph]
    assert "HardSwish" not in ops and ops.count("Clip") == 1
    gate = next(node for node in model.graph if node.name.endswith("_gate_affine"))
    np.testing.assert_allclose(gate.inputs[1].const_value.numpy().reshape(-1), 1 / (6 * scale), rtol=1e-6)
    shift = next(node for node in model.graph if node.name == "lab_add")
    assert shift.inputs[1].const_value.numpy().shape == (1, 16, 1, 1)


def test_quantize_equalizes_through_hard_swish(images):
    float_model = separable_swish_cnn()
    # The weight range is pinned: on a CPU without VNNI, auto measures 8- against 7-bit weights, and the two
    # models may take different ranges (their weights' SQNR would then differ by the bit, not by equalization).
    plain, equalized, output_db = _quantized_both_ways(float_model, images, weight_range="full")
    assert "equalization kept" in equalized.metadata_props[WEIGHT_RANGE_KEY]
    assert output_db(equalized) > output_db(plain) + 3.0
    # inspect reads the conv's output through its hard-swish of per-channel slopes, in the float model's units
    samples = load_samples(images, as_model(float_model))
    rows = {r.name: r for r in inspect_models(float_model, equalized, samples).tensors}
    assert rows["ca"].read_through == "HardSwish" and rows["ca"].clipped == 0
    assert rows["ca"].own.sqnr_db > 30.0
    plain_rows = {r.name: r for r in inspect_models(float_model, plain, samples).tensors}
    assert rows["hs"].own.sqnr_db > plain_rows["hs"].own.sqnr_db + 3.0
    # the weights of both convolutions are compared with the float ones scaled as equalization scaled them
    # (the expand conv's output channels, the depthwise conv's filters): 8-bit codes, not a mismatch
    for name in ("ca", "rd"):
        assert rows[name].weights.sqnr_db > 35.0
        assert rows[name].weights.sqnr_db == pytest.approx(plain_rows[name].weights.sqnr_db, abs=3.0)


def test_weight_factors_meet_at_the_geometric_mean():
    # P's channel reaches 4, C's weights on it 1: both end at 2; a silent side keeps 1; bounded both ways
    factors = weight_equalizing_factors(np.array([4.0, 1.0, 0.0, 1.0, 1e6]), np.array([1.0, 4.0, 2.0, 1e6, 1.0]))
    np.testing.assert_allclose(factors, [0.5, 2.0, 1.0, MAX_FACTOR, 1.0 / MAX_FACTOR])


def test_per_tensor_weights_are_balanced_across_both_kinds_of_pair(images):
    model = prepare(as_model(separable_cnn()))
    # with per-tensor weights, a convolution of one group reading P's channels is a C as well
    assert [(p.producer.name, p.consumer.name) for p in find_pairs(model.graph)] == [("expand", "depthwise")]
    pairs = find_pairs(model.graph, dense=True)
    assert [(p.producer.name, p.consumer.name, p.dense) for p in pairs] == [
        ("expand", "depthwise", False), ("depthwise", "project", True)]
    before = OrtSession(model).run(images, ["logits"])["logits"]
    factors = equalize_weights(model.graph)  # the weights alone decide: no ranges are read
    assert set(factors) == {"ca", "ra", "cd", "rd"}
    np.testing.assert_allclose(OrtSession(model).run(images, ["logits"])["logits"], before, rtol=1e-4, atol=1e-4)
    weights = {node.name: node.inputs[1].const_value.numpy() for node in model.graph if node.op_type == "Conv"}
    # one pass in graph order: the last pair's two sides reach equally far on every channel; the first pair's
    # P, whose channels spanned a hundredfold, now spans a few times at most (its C was rescaled since)
    reach_p = np.abs(weights["depthwise"]).max(axis=(1, 2, 3))
    reach_c = np.abs(weights["project"]).max(axis=(0, 2, 3))
    np.testing.assert_allclose(reach_p, reach_c, rtol=1e-5)
    expand = np.abs(weights["expand"]).max(axis=(1, 2, 3))
    assert expand.max() / expand.min() < 10.0


def test_po2_weights_on_one_grid_gain_from_their_own_equalization(images):
    float_model = separable_cnn_with_wide_columns()
    plain, equalized, output_db = _quantized_both_ways(float_model, images, scheme="po2")
    note = equalized.metadata_props[WEIGHT_RANGE_KEY]
    assert "(eq. 35), " in note and "equalization kept (weights, eq. 35c, 2 pairs)" in note
    assert output_db(equalized) > output_db(plain) + 6.0
    # inspect compares each layer's codes with its float weights scaled as equalization scaled them
    samples = load_samples(images, as_model(float_model))
    rows = {r.name: r for r in inspect_models(float_model, equalized, samples).tensors}
    plain_rows = {r.name: r for r in inspect_models(float_model, plain, samples).tensors}
    for name in ("ca", "cd", "cc"):  # expand (rows scaled), depthwise (filters and rows), project (columns)
        assert rows[name].weights.sqnr_db > max(plain_rows[name].weights.sqnr_db, 25.0)


def test_cli_no_equalize_flag(tmp_path, images):
    source, data = tmp_path / "separable.onnx", tmp_path / "x.npz"
    onnx.save(separable_cnn(), source)
    np.savez(data, **images)
    for flags, expected in (([], True), (["--no-equalize"], False)):
        target = tmp_path / f"separable{len(flags)}.int8.onnx"
        result = run_cli("quantize", str(source), "--calibration", str(data), "-o", str(target), *flags, "--no-report")
        assert result.returncode == 0, result.stderr
        assert (EQUALIZATION_KEY in {p.key for p in onnx.load(target).metadata_props}) is expected

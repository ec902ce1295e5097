"""Activation-aware scales before 4-bit blocks (eq. 39): the scales' form, the rescaled model's float function and
moments, and a lower layer error where a norm's output has channels far larger than the rest."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

import eightbit
import eightbit.pipeline.steps.blocks as blocks_step
from conftest import make_model, tensor, value_info
from eightbit.backends import OrtSession
from eightbit.calibrate.moments import input_moments, weighted_nodes
from eightbit.datasets import input_specs, samples_from_arrays
from eightbit.ir import load_model
from eightbit.measure.metrics import sqnr_db
from eightbit.passes.activation_scales import ScaleBeforeBlocks
from eightbit.pipeline.options import MARGIN_DB
from eightbit.quant.activation_scales import ALPHAS, channel_scales, scaled_error, scaled_moments
from eightbit.quant.blocks import block_format
from eightbit.record import decisions_of

WIDTH = 64


def _norm_model(outliers: bool) -> onnx.ModelProto:
    """x -> LayerNormalization (its Scale 20 on four channels where `outliers`) -> two MatMuls -> Add -> y."""
    rng = np.random.default_rng(0)
    gamma = np.ones(WIDTH, np.float32)
    if outliers:
        gamma[[3, 17, 40, 61]] = 20.0
    inits = [tensor("gamma", gamma), tensor("beta", rng.normal(0, 0.1, WIDTH).astype(np.float32)),
             tensor("w1", rng.normal(0, 0.2, (WIDTH, 48)).astype(np.float32)),
             tensor("w2", rng.normal(0, 0.2, (WIDTH, 48)).astype(np.float32))]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], axis=-1, name="norm"),
             helper.make_node("MatMul", ["n", "w1"], ["a"], name="first"),
             helper.make_node("MatMul", ["n", "w2"], ["b"], name="second"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    return make_model(nodes, [value_info("x", ["batch", WIDTH])], [value_info("y", ["batch", 48])], inits)


def _moments(model: ir.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    samples = samples_from_arrays({"x": x}, input_specs(model))
    return input_moments(model, weighted_nodes(model.graph, list(model.graph)), samples, show_progress=False)


def test_channel_scales_are_one_at_alpha_0_and_centred_otherwise():
    rms = np.array([0.0, 0.5, 2.0, 8.0])
    np.testing.assert_allclose(channel_scales(rms, 0.0), 1.0)
    scales = channel_scales(rms, 0.5)
    assert scales.max() * scales.min() == pytest.approx(1.0)
    assert scales[0] == scales[1] < scales[2] < scales[3]  # a channel never nonzero takes the smallest rms
    assert 0.0 in ALPHAS


def test_rescaled_model_computes_the_same_and_its_moments_are_the_rescaled_ones():
    x = np.random.default_rng(1).normal(0, 1, (64, WIDTH)).astype(np.float32)
    model = ir.serde.deserialize_model(_norm_model(outliers=True))
    before = OrtSession(model).run({"x": x})["y"]
    moments = _moments(model, x)
    scaling = ScaleBeforeBlocks(block_format(4, 32, False), moments, MARGIN_DB)
    scaling(model)

    assert [norm.name for norm in scaling.scaled] == ["norm"] and scaling.scaled[0].alpha > 0
    assert scaling.scaled[0].after_db > scaling.scaled[0].before_db
    np.testing.assert_allclose(OrtSession(model).run({"x": x})["y"], before, rtol=1e-4, atol=1e-4)
    recomputed = _moments(model, x)
    for name in ("first", "second"):
        np.testing.assert_allclose(moments[name], recomputed[name], rtol=1e-4, atol=1e-6)


def test_scales_lower_the_error_of_outlier_channels_and_leave_even_ones_alone():
    x = np.random.default_rng(2).normal(0, 1, (64, WIDTH)).astype(np.float32)
    block = block_format(4, 32, False)
    for outliers, scaled in ((True, True), (False, False)):
        model = ir.serde.deserialize_model(_norm_model(outliers))
        moments = _moments(model, x)
        rows = np.asarray(model.graph.initializers["w1"].const_value.numpy()).T
        h = moments["first"]
        scaling = ScaleBeforeBlocks(block, moments, MARGIN_DB)
        scaling(model)
        assert bool(scaling.scaled) == scaled
        if scaled:  # the taken scales beat none on a reader by itself too
            alpha = scaling.scaled[0].alpha
            scales = channel_scales(np.sqrt(np.diagonal(h[0])), alpha)
            assert scaled_error(rows, h, scales, block) < scaled_error(rows, h, np.ones(WIDTH), block)


def test_scaled_moments_of_diagonal_blocks_match_the_whole_ones():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (200, 8))
    h = (x.T @ x / len(x))[None]
    scales = rng.uniform(0.5, 2.0, 8)
    whole = scaled_moments(h, scales)
    blocks = np.stack([h[0, :4, :4], h[0, 4:, 4:]])[None]
    np.testing.assert_allclose(scaled_moments(blocks, scales)[0, 1], whole[0, 4:, 4:])


def test_the_weights_scheme_rescales_a_norm_with_outlier_channels_and_agrees_better(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    calibration, held_out = rng.normal(0, 1, (64, WIDTH)).astype(np.float32), rng.normal(0, 1, (64, WIDTH))
    path = tmp_path / "norm.onnx"
    onnx.save(_norm_model(outliers=True), path)
    expected = OrtSession(path).run({"x": held_out.astype(np.float32)})["y"]

    def agreement(output):
        eightbit.quantize(path, {"x": calibration}, scheme="weights", weight_bits=4, output=output)
        got = OrtSession(output).run({"x": held_out.astype(np.float32)})["y"]
        return sqnr_db(expected, got), [d["step"] for d in decisions_of(load_model(output))]

    scaled_db, steps = agreement(tmp_path / "scaled.onnx")
    monkeypatch.setattr(blocks_step, "_scaled", lambda job, source, moments: (source, ()))
    unscaled_db, _ = agreement(tmp_path / "unscaled.onnx")
    assert "activation scales" in steps
    assert scaled_db > unscaled_db + 0.5

"""--calibrate auto: every method's range from one pass, the probe model, the per-tensor search."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

import eightbit
from conftest import make_model, small_cnn, tensor, value_info
from eightbit.api import load_samples
from eightbit.backends import OrtSession
from eightbit.calibrate import collect_ranges
from eightbit.calibrate.per_tensor import probe_model
from eightbit.calibrate.runner import collect_candidate_ranges
from eightbit.errors import InputError
from eightbit.measure.metrics import sqnr_db
from eightbit.metadata import WEIGHT_RANGE_KEY

STATIC_METHODS = ("minmax", "percentile", "mse", "entropy")


def test_one_pass_gives_the_range_of_every_method():
    model = ir.from_proto(small_cnn())
    samples = load_samples({"x": np.random.default_rng(0).standard_t(3, (12, 3, 16, 16)).astype(np.float32)}, model)
    names = ["x", "c1", "r1", "sum", "logits"]
    candidates = collect_candidate_ranges(model, names, samples, show_progress=False)
    for method in STATIC_METHODS:
        alone = collect_ranges(model, names, samples, method, show_progress=False)
        assert {name: candidates[name][method] for name in names} == alone


def _activation_grids(model: ir.Model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Input name -> (scale, zero point) of every QuantizeLinear on an activation."""
    grids = {}
    for node in model.graph:
        if node.op_type == "QuantizeLinear" and node.inputs[0].const_value is None:
            grids[node.inputs[0].name] = (node.inputs[1].const_value.numpy(), node.inputs[2].const_value.numpy())
    return grids


def test_probe_fed_the_models_own_grids_computes_what_the_model_does():
    x = np.random.default_rng(1).normal(0, 1, (16, 3, 16, 16)).astype(np.float32)
    quantized = eightbit.quantize(small_cnn(), {"x": x}, weight_rounding="nearest", bias_correction=False,
                                  speed_check=False)
    grids = _activation_grids(quantized)
    probe, inputs = probe_model(quantized, grids)
    assert set(inputs) == set(grids)
    feeds = {}
    for name, (scale_input, zero_input) in inputs.items():
        feeds[scale_input.name], feeds[zero_input.name] = grids[name]
    sample = x[:2]
    # Both run as float arithmetic between Q/DQ pairs: the probe cannot fuse a grid it is fed.
    expected = OrtSession(quantized, optimize="basic").run({"x": sample})["probs"]
    got = OrtSession(probe).run({"x": sample, **feeds})["probs"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    name = next(iter(inputs))
    coarser = {**feeds, inputs[name][0].name: np.asarray(feeds[inputs[name][0].name] * 8, np.float32)}
    assert not np.allclose(OrtSession(probe).run({"x": sample, **coarser})["probs"], got)


def _squashed() -> onnx.ModelProto:
    """Conv -> Tanh -> Conv: past |h| ~ 3 the tanh's output stops changing, so h's tails need no grid."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1"),
             helper.make_node("Tanh", ["h"], ["t"], name="tanh"),
             helper.make_node("Conv", ["t", "w2", "b2"], ["y"], name="conv2")]
    inits = [tensor("w1", rng.normal(0, 0.5, (8, 3, 1, 1)).astype(np.float32)),
             tensor("b1", np.zeros(8, np.float32)),
             tensor("w2", rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32)),
             tensor("b2", np.zeros(4, np.float32))]
    return make_model(nodes, [value_info("x", [1, 3, 8, 8])], [value_info("y", [1, 4, 8, 8])], inits)


def test_auto_narrows_a_range_whose_tails_the_next_op_squashes():
    """Heavy-tailed inputs (Student t, 3 degrees of freedom) stretch the min/max grid of the tanh's input;
    auto finds narrower ranges that the outputs agree better with, and that holds on other samples."""
    rng = np.random.default_rng(3)
    calibration = 3 * rng.standard_t(3, (32, 1, 3, 8, 8)).astype(np.float32)
    evaluation = 3 * rng.standard_t(3, (32, 1, 3, 8, 8)).astype(np.float32)
    options = dict(weight_rounding="nearest", bias_correction=False, speed_check=False, min_sqnr=None)
    by_method = {method: eightbit.quantize(_squashed(), {"x": calibration}, calibrate=method, **options)
                 for method in ("minmax", "auto")}
    note = by_method["auto"].metadata_props[WEIGHT_RANGE_KEY]
    assert "--calibrate auto:" in note and note.endswith(": taken")
    reference = OrtSession(ir.from_proto(_squashed()))
    expected = np.concatenate([reference.run({"x": sample})["y"] for sample in evaluation])
    agreement = {}
    for method, model in by_method.items():
        session = OrtSession(model)
        got = np.concatenate([session.run({"x": sample})["y"] for sample in evaluation])
        agreement[method] = sqnr_db(expected, got)
    assert agreement["auto"] > agreement["minmax"] + 6.0


def test_auto_without_calibration_samples_is_refused():
    with pytest.raises(InputError, match="--calibrate auto"):
        eightbit.quantize(_squashed(), calibrate="auto")

"""The power-of-two scheme: scales 2^k chosen by least error, shifts only, 16-bit biases reported when clipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import helper

import eightbit
from conftest import make_model, tensor, value_info
from eightbit.api import bias_saturation_of, load_samples
from eightbit.backends import OrtSession, ReferenceSession
from eightbit.backends.reference import DequantizeStep, FloatStep, QuantizeStep
from eightbit.calibrate.histogram import HistogramObserver
from eightbit.cli import main
from eightbit.config import ACTIVATIONS_S8_PO2, WEIGHTS_S8_PO2
from eightbit.demo import shipped_digits, shipped_model
from eightbit.isa import cpu_features
from eightbit.measure.metrics import sqnr_db
from eightbit.quant import choose_qparams
from eightbit.quant.power_of_two import CANDIDATES, covering_exponent, histogram_range, weight_scales
from eightbit.report.agreement import backend_agreement

FINITE = st.floats(-100, 100, allow_nan=False, width=32)
# Magnitudes whose covering power of two is a normal float32 (scales are floored at 2^-126).
NORMAL = FINITE.filter(lambda v: v == 0 or abs(v) > 1e-30)


def _error(values: np.ndarray, scale: float) -> float:
    fmt = WEIGHTS_S8_PO2
    codes = np.clip(np.rint(values / scale), fmt.qmin, fmt.qmax)
    return float(((values - codes * scale) ** 2).sum())


@given(arrays(np.float32, st.integers(1, 64), elements=FINITE))
def test_weight_scale_is_the_power_of_two_with_least_error(values):
    scale = float(weight_scales(values, None, WEIGHTS_S8_PO2))
    assert np.log2(scale) == np.round(np.log2(scale))
    top = int(covering_exponent(np.abs(values).max(), WEIGHTS_S8_PO2.qmax))
    for k in range(top - CANDIDATES, top + 1):
        assert _error(values.astype(np.float64), scale) <= _error(values.astype(np.float64), 2.0**k) + 1e-9


@given(arrays(np.float32, (3, 5), elements=FINITE))
def test_per_channel_weight_scales_are_chosen_channel_by_channel(values):
    together = weight_scales(values, 0, WEIGHTS_S8_PO2)
    assert together.shape == (3,)
    for channel in range(3):
        assert together[channel] == weight_scales(values[channel], None, WEIGHTS_S8_PO2)


@settings(deadline=None)
@given(arrays(np.float32, st.integers(1, 500), elements=NORMAL))
def test_histogram_choice_maps_back_to_exactly_its_power_of_two(values):
    observer = HistogramObserver(lambda n, p, w: histogram_range(n, p, w, ACTIVATIONS_S8_PO2))
    observer.observe(values)
    low, high = observer.range()
    scale, zero_point = choose_qparams(low, high, ACTIVATIONS_S8_PO2)
    assert zero_point == 0 and np.log2(scale) == np.round(np.log2(scale))
    # Never coarser than the grid covering everything seen.
    magnitude = max(-float(values.min()), float(values.max()), 0.0)
    if magnitude > 0:
        assert scale <= 2.0 ** covering_exponent(magnitude, ACTIVATIONS_S8_PO2.qmax)


def test_histogram_choice_clips_a_rare_outlier():
    values = np.concatenate([np.random.default_rng(0).normal(0, 1, 100_000), [400.0]])
    observer = HistogramObserver(lambda n, p, w: histogram_range(n, p, w, ACTIVATIONS_S8_PO2))
    observer.observe(values)
    scale, _ = choose_qparams(*observer.range(), ACTIVATIONS_S8_PO2)
    assert scale < 2.0 ** covering_exponent(400.0, 127)


@pytest.fixture(scope="module")
def po2_digits():
    digits = shipped_digits()
    return digits, eightbit.quantize(shipped_model(), {"image": digits.x_train[:256]}, scheme="po2")


def test_po2_digits_keeps_accuracy_with_shifts_only(po2_digits):
    digits, model = po2_digits
    scales = [node.inputs[1].const_value.numpy() for node in model.graph
              if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert all(np.all(np.exp2(np.round(np.log2(s))) == s) for s in scales)
    float_scores = OrtSession(shipped_model()).run({"image": digits.x_test})["logits"]
    float_accuracy = np.mean(float_scores.argmax(-1) == digits.y_test)
    session = ReferenceSession(model)
    for scores in (session.run({"image": digits.x_test})["logits"],
                   OrtSession(model).run({"image": digits.x_test})["logits"]):
        assert np.mean(scores.argmax(-1) == digits.y_test) >= float_accuracy - 0.015
    # No float between the graph's edges: the input is quantized once, the output dequantized once.
    kinds = [type(step) for step in session.steps]
    assert FloatStep not in kinds
    assert kinds[0] is QuantizeStep and kinds.count(QuantizeStep) == 1
    assert kinds[-1] is DequantizeStep and kinds.count(DequantizeStep) == 1
    # Every requantization is a rounding shift: the multiplier is exactly 2^30 (eq. 9 for M = 2^-n).
    for step in session.integer_steps:
        for value in step.compute.keywords.values():
            for requantization in [value] + [getattr(value, f) for f in ("a_rescale", "b_rescale", "output")
                                             if hasattr(value, f)]:
                if hasattr(requantization, "multiplier"):
                    assert np.all(requantization.multiplier == 2**30), step.node


def test_po2_reference_and_onnx_runtime_differ_only_in_ties(po2_digits):
    digits, model = po2_digits
    result = backend_agreement(model, load_samples({"image": digits.x_test[:64]}, model)).overall()
    assert result.max_difference <= 1 and result.identical_fraction >= 0.99


def _big_bias_model():
    rng = np.random.default_rng(3)
    inits = [tensor("w", rng.normal(0, 0.05, (4, 3, 3, 3)).astype(np.float32)),
             tensor("b", np.array([0.1, -0.2, 900.0, 0.3], np.float32))]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    return make_model([node], [value_info("x", ["n", 3, 8, 8])], [value_info("y", ["n", 4, 8, 8])], inits)


def test_bias_that_overflows_sixteen_bits_is_reported(tmp_path, capsys):
    source = tmp_path / "conv.onnx"
    source.write_bytes(_big_bias_model().SerializeToString())
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).normal(0, 1, (8, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "conv.po2.onnx"
    assert main(["quantize", str(source), "--calibration", str(data), "-o", str(out), "--scheme", "po2",
                 "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["bias_saturated"].values()) == [1]
    assert bias_saturation_of(eightbit.ir.load_model(out)) == report["bias_saturated"]
    assert main(["quantize", str(source), "--calibration", str(data), "-o", str(out), "--scheme", "po2",
                 "--bias-bits", "32", "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["bias_saturated"] == {}


def test_po2_per_channel_weights_from_the_command_line(tmp_path):
    digits = shipped_digits()
    data = tmp_path / "calibration.npz"
    np.savez(data, image=digits.x_train[:128])
    source = tmp_path / "digits.onnx"
    source.write_bytes(shipped_model().read_bytes())
    out = tmp_path / "digits.po2.onnx"
    assert main(["quantize", str(source), "--calibration", str(data), "-o", str(out), "--scheme", "po2",
                 "--weight-granularity", "per_channel", "--no-report", "-q"]) == 0
    model = eightbit.ir.load_model(out)
    weight_scales = [node.inputs[1].const_value.numpy() for node in model.graph if node.op_type == "DequantizeLinear"
                     and node.inputs[0].const_value is not None and node.inputs[0].const_value.numpy().dtype == np.int8]
    assert weight_scales and all(s.size > 1 for s in weight_scales)  # one 2^k per output channel
    assert any(len(np.unique(s)) > 1 for s in weight_scales)
    assert all(np.all(np.exp2(np.round(np.log2(s))) == s) for s in weight_scales)
    result = backend_agreement(model, load_samples({"image": digits.x_test[:64]}, model)).overall()
    assert result.max_difference <= 1 and result.identical_fraction >= 0.99
    with pytest.raises(SystemExit) as refused:
        main(["quantize", str(source), "--calibration", str(data), "-o", str(tmp_path / "x.onnx"),
              "--weight-granularity", "per_layer", "-q"])
    assert refused.value.code == 2 and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("weight_range", ["auto", "full"])
def test_po2_model_computes_in_onnx_runtime_what_the_integer_reference_defines(weight_range):
    """The weight range chosen for po2 keeps ONNX Runtime's fused kernels close to the exact
    integer result: on x86 without VNNI, 8-bit s8 x s8 kernels saturate (docs section 4)."""
    digits = shipped_digits()
    model = eightbit.quantize(shipped_model(), {"image": digits.x_train[:128]}, scheme="po2",
                              weight_granularity="per_channel", weight_range=weight_range)
    exact = ReferenceSession(model).run({"image": digits.x_test})["logits"]
    fused = OrtSession(model).run({"image": digits.x_test})["logits"]
    agreement = sqnr_db(exact, fused)
    if weight_range == "auto" or not cpu_features().u8s8_can_saturate:
        assert agreement > 30.0
    else:  # the hazard the automatic choice avoids, measured where it exists
        assert agreement < 30.0

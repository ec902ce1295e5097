"""Empirical bias correction (eq. 7b): each layer's mean output error, measured in order, moved into its bias."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

import eightbit
from eightbit.api import WEIGHT_RANGE_KEY, load_samples
from eightbit.calibrate.means import channel_means, channel_ranges
from eightbit.config import BIAS_S32
from eightbit.ir import as_model
from eightbit.ir.graph import constant_array
from eightbit.metadata import BIAS_CORRECTION_KEY
from eightbit.passes.equalize_channels import equalize_channels, find_pairs
from eightbit.pipeline.correct_biases import correct_biases, without_bias_corrections
from eightbit.prepare import prepare
from test_equalization import separable_swish_cnn
from test_inspect import chain_cnn


def _conv_b_error(quantized: ir.Model, reference: ir.Model, samples) -> np.ndarray:
    """Per channel of conv_b's output: float mean minus quantized mean."""
    output = next(n for n in quantized.graph if n.name == "conv_b").outputs[0].name
    original = next(n for n in reference.graph if n.name == "conv_b").outputs[0].name
    return channel_means(reference, {original: 1}, samples)[original] - channel_means(quantized, {output: 1},
                                                                                       samples)[output]


def test_a_shifted_bias_is_measured_and_moved_back():
    rng = np.random.default_rng(4)
    images = {"x": rng.normal(0, 1, (16, 3, 12, 12)).astype(np.float32)}
    reference = prepare(as_model(chain_cnn(outlier=False)))
    quantized = eightbit.quantize(chain_cnn(outlier=False), images, bias_correction=False)
    samples = load_samples(images, reference)
    conv_b = next(n for n in quantized.graph if n.name == "conv_b")
    codes_value, scale_value = conv_b.inputs[2].producer().inputs[:2]
    codes, scale = constant_array(codes_value), constant_array(scale_value)
    assert np.abs(_conv_b_error(quantized, reference, samples)).max() < 0.05  # close before the damage
    shifted = codes.copy()
    shifted[2] += np.int32(round(0.5 / float(np.broadcast_to(scale, codes.shape)[2])))  # channel 2 off by +0.5
    codes_value.const_value = ir.tensor(shifted, name=codes_value.name)
    assert abs(_conv_b_error(quantized, reference, samples)[2] + 0.5) < 0.05

    moved = correct_biases(quantized, reference, samples, BIAS_S32)
    assert "conv_b" in moved
    assert np.abs(_conv_b_error(quantized, reference, samples)).max() < 0.02
    restored = constant_array(conv_b.inputs[2].producer().inputs[0])
    assert abs(int(restored[2]) - int(codes[2])) < abs(int(shifted[2]) - int(codes[2])) // 10


def test_the_default_measures_the_correction_and_says_what_it_kept():
    images = {"x": np.random.default_rng(4).normal(0, 1, (32, 3, 12, 12)).astype(np.float32)}
    note = eightbit.quantize(chain_cnn(outlier=True), images).metadata_props[WEIGHT_RANGE_KEY]
    assert "layers corrected for their mean output error" in note and "dB uncorrected" in note
    off = eightbit.quantize(chain_cnn(outlier=True), images, bias_correction=False).metadata_props[WEIGHT_RANGE_KEY]
    assert "corrected" not in off


def test_the_recorded_corrections_undo_exactly():
    """What inspect --impact measures on: the corrected model with its recorded shifts taken back is the
    model built without correction, code for code."""
    images = {"x": np.random.default_rng(4).normal(0, 1, (32, 3, 12, 12)).astype(np.float32)}
    corrected = eightbit.quantize(chain_cnn(outlier=True), images)
    plain = eightbit.quantize(chain_cnn(outlier=True), images, bias_correction=False)
    assert BIAS_CORRECTION_KEY in corrected.metadata_props and BIAS_CORRECTION_KEY not in plain.metadata_props

    def codes(model: ir.Model) -> dict[str, bytes]:
        return {t.name: t.SerializeToString() for t in ir.to_proto(model).graph.initializer}

    assert codes(corrected) != codes(plain)
    undone = without_bias_corrections(corrected)
    assert codes(undone) == codes(plain) and BIAS_CORRECTION_KEY not in undone.metadata_props


def test_the_ramp_of_a_hard_gate_is_left_where_it_is():
    """An equalized hard-swish is a gate in the float model too (Conv -> Clip to [0, 1], times x): the gate
    conv's unclipped output errs most where the clip makes it vanish, and its bias places the ramp."""
    rng = np.random.default_rng(5)
    images = {"x": rng.normal(0, 1, (32, 3, 10, 10)).astype(np.float32)}
    reference = prepare(as_model(separable_swish_cnn()))
    samples = load_samples(images, reference)
    measured = [pair.measured.name for pair in find_pairs(reference.graph)]
    assert equalize_channels(reference.graph, channel_ranges(reference, measured, samples))
    gates = [node.name for node in reference.graph if node.op_type == "Conv" and node.name.endswith("_gate_affine")]
    assert gates
    quantized = eightbit.quantize(reference, images, bias_correction=False, equalization=False, speed_check=False)
    assert set(gates) <= {node.name for node in quantized.graph}
    moved = correct_biases(quantized, reference, samples, BIAS_S32)
    assert moved and not set(gates) & set(moved)

"""Eq. 8a: past the live range, a saturating activation's quantized output no longer changes."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.config import ACTIVATIONS_U8
from eightbit.quant import choose_qparams, quantize
from eightbit.quant.saturation import hard_sigmoid_live_range, hard_swish_live_range, sigmoid_live_range

U8 = ACTIVATIONS_U8


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _hard_sigmoid(x, alpha, beta):
    return np.clip(alpha * x + beta, 0.0, 1.0)


def _hard_swish(x):
    return x * _hard_sigmoid(x, 1.0 / 6.0, 0.5)


def _codes_beyond(activation, live, output_range, span=50.0):
    """Output codes of inputs below live[0] and above live[1] (all must equal the bound's code)."""
    scale, zero_point = choose_qparams(*output_range, U8)
    codes = []
    for bound, direction in ((live[0], -1.0), (live[1], 1.0)):
        if math.isfinite(bound):
            x = bound + direction * np.linspace(1e-3, span, 200)
            codes.append(quantize(activation(x).astype(np.float32), scale, zero_point, U8))
    return codes


@given(st.floats(0.5, 1.0), st.floats(0.0, 0.3))
def test_sigmoid_output_code_is_constant_past_the_live_range(high, low):
    scale, zero_point = choose_qparams(low, high, U8)
    live = sigmoid_live_range(float(scale), int(zero_point), U8)
    for codes in _codes_beyond(_sigmoid, live, (low, high)):
        assert len(set(codes.tolist())) == 1


@given(st.floats(0.05, 0.5), st.floats(-1.0, 1.0), st.floats(0.5, 1.0))
def test_hard_sigmoid_output_code_is_constant_past_the_live_range(alpha, beta, high):
    scale, zero_point = choose_qparams(0.0, high, U8)
    live = hard_sigmoid_live_range(float(scale), int(zero_point), U8, alpha, beta)
    for codes in _codes_beyond(lambda x: _hard_sigmoid(x, alpha, beta), live, (0.0, high)):
        assert len(set(codes.tolist())) == 1


@given(st.floats(0.5, 20.0))
def test_hard_swish_output_code_is_constant_past_the_live_range(high):
    scale, zero_point = choose_qparams(-0.375, high, U8)
    live = hard_swish_live_range(float(scale), int(zero_point), U8)
    assert live[0] == -3.0
    for codes in _codes_beyond(_hard_swish, live, (-0.375, high)):
        assert len(set(codes.tolist())) == 1


@given(st.floats(0.5, 20.0), st.floats(1 / 6, 3.0))
def test_equalized_hard_swish_output_code_is_constant_past_the_live_range(high, slope):
    # an equalized hard-swish's gate (eq. 35b) has slope 1/(6 f) >= 1/6: it closes at -1/(2 slope), not at -3
    scale, zero_point = choose_qparams(-0.375, high, U8)
    live = hard_swish_live_range(float(scale), int(zero_point), U8, slope)
    assert live[0] == pytest.approx(-0.5 / slope)
    for codes in _codes_beyond(lambda x: x * _hard_sigmoid(x, slope, 0.5), live, (-0.375, high)):
        assert len(set(codes.tolist())) == 1


def test_sigmoid_live_range_of_a_full_probability_output():
    scale, zero_point = choose_qparams(0.0, 1.0, U8)
    low, high = sigmoid_live_range(float(scale), int(zero_point), U8)
    assert low == pytest.approx(-high, rel=1e-4) and 6.2 < high < 6.3  # logit(254.5 / 255)

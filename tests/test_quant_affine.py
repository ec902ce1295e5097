import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.config import ACTIVATIONS_U8, BIAS_S32, WEIGHTS_S7_PER_CHANNEL, WEIGHTS_S8_PER_CHANNEL
from eightbit.quant import choose_qparams, dequantize, quantize, quantize_bias

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
formats = st.sampled_from([ACTIVATIONS_U8, WEIGHTS_S8_PER_CHANNEL, WEIGHTS_S7_PER_CHANNEL])


@given(finite, finite, formats)
def test_zero_is_exactly_representable(a, b, fmt):
    scale, zero_point = choose_qparams(min(a, b), max(a, b), fmt)
    q = quantize(np.float32(0.0), scale, zero_point, fmt)
    assert dequantize(q, scale, zero_point) == 0.0


@given(finite, finite, formats, st.data())
def test_grid_values_round_trip_exactly(a, b, fmt, data):
    scale, zero_point = choose_qparams(min(a, b), max(a, b), fmt)
    codes = np.array(data.draw(st.lists(st.integers(fmt.qmin, fmt.qmax), min_size=1, max_size=20)))
    codes = codes.astype(fmt.numpy_dtype)
    assert np.array_equal(quantize(dequantize(codes, scale, zero_point), scale, zero_point, fmt), codes)


@given(finite, finite, st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_error_inside_range_is_at_most_half_a_step(a, b, fractions):
    low, high = min(a, b), max(a, b)
    scale, zero_point = choose_qparams(low, high, ACTIVATIONS_U8)
    x = np.float32(min(low, 0) + np.array(fractions) * (max(high, 0) - min(low, 0)))
    error = np.abs(dequantize(quantize(x, scale, zero_point, ACTIVATIONS_U8), scale, zero_point) - x)
    assert np.all(error <= scale * 0.5 * (1 + 1e-5) + 1e-6 * np.abs(x))


@given(finite, finite, formats)
def test_fake_quantization_is_idempotent(a, b, fmt):
    scale, zero_point = choose_qparams(min(a, b), max(a, b), fmt)
    x = np.linspace(min(a, b) - 1, max(a, b) + 1, 37, dtype=np.float32)
    once = dequantize(quantize(x, scale, zero_point, fmt), scale, zero_point)
    twice = dequantize(quantize(once, scale, zero_point, fmt), scale, zero_point)
    assert np.array_equal(once, twice)


def test_symmetric_weights_use_zero_point_zero_and_narrow_range():
    scale, zero_point = choose_qparams(np.array([-2.0, -1.0]), np.array([1.0, 4.0]), WEIGHTS_S8_PER_CHANNEL)
    assert np.all(zero_point == 0)
    np.testing.assert_allclose(scale, [2 / 127, 4 / 127], rtol=1e-6)
    assert WEIGHTS_S8_PER_CHANNEL.qmin == -127
    assert (WEIGHTS_S7_PER_CHANNEL.qmin, WEIGHTS_S7_PER_CHANNEL.qmax) == (-63, 63)


def test_rounding_is_half_to_even_on_x_over_scale_then_zero_point_added():
    # x / scale = 0.5 and 1.5 round to 0 and 2; the zero point is added after rounding.
    codes = quantize(np.array([0.5, 1.5, -0.5]), np.float32(1.0), np.uint8(10), ACTIVATIONS_U8)
    assert codes.tolist() == [10, 12, 10]


def test_per_channel_quantization_runs_along_the_axis():
    w = np.array([[1.0, -1.0], [10.0, -10.0]], np.float32)
    scale, zero_point = choose_qparams(w.min(1), w.max(1), WEIGHTS_S8_PER_CHANNEL)
    assert quantize(w, scale, zero_point, WEIGHTS_S8_PER_CHANNEL, axis=0).tolist() == [[127, -127], [127, -127]]


def test_degenerate_range_gives_a_usable_scale():
    scale, zero_point = choose_qparams(0.0, 0.0, ACTIVATIONS_U8)
    assert scale == 1.0 and zero_point == 0


def test_bias_is_quantized_at_input_times_weight_scale():
    codes, scale = quantize_bias(np.array([1.0, -2.0]), 0.5, np.array([0.1, 0.2]), BIAS_S32)
    np.testing.assert_allclose(scale, [0.05, 0.1], rtol=1e-6)
    assert codes.tolist() == [20, -20]


def test_non_finite_range_is_refused():
    with pytest.raises(ValueError):
        choose_qparams(-np.inf, 1.0, ACTIVATIONS_U8)


def test_a_least_scale_widens_only_the_channels_it_must_and_the_bias_then_fits():
    from eightbit.config import WEIGHTS_S8_PO2
    from eightbit.quant.weights import least_weight_scale, weight_qparams

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (3, 8))
    w[1] *= 1e-9  # a channel batch-norm folding left all but zero
    bias, input_scale = np.array([0.2, 0.5, -0.1]), np.float32(0.02)
    plain, _ = weight_qparams(w, WEIGHTS_S8_PER_CHANNEL, axis=0)
    least = least_weight_scale(bias, input_scale, BIAS_S32)
    widened, zero_point = weight_qparams(w, WEIGHTS_S8_PER_CHANNEL, axis=0, least_scale=least)
    assert widened[0] == plain[0] and widened[2] == plain[2]  # float32 scales: equal to 2^-24
    assert widened[1] == pytest.approx(least[1], rel=1e-6) and least[1] > 1000 * plain[1]
    codes, _ = quantize_bias(bias, input_scale, widened, BIAS_S32)
    assert np.allclose(codes * (input_scale * widened), bias, rtol=1e-4)
    scale, _ = weight_qparams(w, ACTIVATIONS_U8, axis=0, least_scale=least)  # asymmetric: its top end widens
    assert scale[1] == pytest.approx(least[1], rel=1e-6) and scale[0] == weight_qparams(w, ACTIVATIONS_U8, axis=0)[0][0]
    po2, _ = weight_qparams(w, WEIGHTS_S8_PO2, axis=0, least_scale=least)
    assert po2[1] >= least[1] and np.log2(po2[1]) == np.round(np.log2(po2[1]))
    with pytest.raises(ValueError, match="per-channel"):
        weight_qparams(w, WEIGHTS_S8_PER_CHANNEL, axis=None, least_scale=least)

"""Streaming calibration: histogram observers and the clipping-range methods (eq. 15-16b)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eightbit
from eightbit.calibrate.histogram import BINS_PER_SIDE, HistogramObserver
from eightbit.quant.clipping import entropy_range, entropy_threshold, mse_range, percentile_range

METHODS = ("percentile", "mse", "entropy")
RANGES = (percentile_range, mse_range, entropy_range)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.floats(0.01, 1000.0), st.sampled_from(RANGES))
def test_histogram_does_not_depend_on_how_samples_are_batched(pieces, spread, choose):
    data = np.random.default_rng(pieces).standard_t(3, 4000) * spread
    whole, split = HistogramObserver(choose), HistogramObserver(choose)
    whole.observe(data)
    for part in np.array_split(data[np.argsort(np.abs(data))], pieces):  # growing magnitudes force merges
        split.observe(part)
    assert whole.width == split.width
    assert np.array_equal(whole.negative, split.negative) and np.array_equal(whole.positive, split.positive)
    assert whole.negative.sum() + whole.positive.sum() == data.size


def test_histogram_memory_is_fixed():
    observer = HistogramObserver(mse_range)
    for seed in range(20):
        observer.observe(np.random.default_rng(seed).normal(0, seed + 1, 10_000))
    assert observer.negative.shape == observer.positive.shape == (BINS_PER_SIDE,)


def _histogram(data):
    observer = HistogramObserver(mse_range)
    observer.observe(data)
    return observer


@pytest.mark.parametrize("choose", [percentile_range, entropy_range])
def test_percentile_and_entropy_clip_a_rare_outlier_that_minmax_keeps(choose):
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(0, 1, 200_000), [80.0]])
    observer = HistogramObserver(choose)
    observer.observe(data)
    low, high = observer.range()  # never wider than what was seen
    assert -8 < low < -2 and 2 < high <= 8


def test_entropy_threshold_trades_clipping_against_resolution():
    """A spike of mass at one magnitude far out: clipping it moves a lot of probability (high KL),
    so the threshold keeps it; the same mass spread thinly over a long tail is clipped."""
    width, bins = 1.0 / 64, BINS_PER_SIDE
    body = np.zeros(bins)
    body[:256] = 1000.0  # magnitudes in [0, 4)
    spike = body.copy()
    spike[3000] = 20_000.0
    assert entropy_threshold(spike, width, 255) > 3000 * width
    tail = body.copy()
    tail[256:3001] = 20_000.0 / 2745
    assert entropy_threshold(tail, width, 255) < 3000 * width


def test_methods_keep_a_uniform_distribution_almost_whole():
    data = np.random.default_rng(1).uniform(-1, 3, 100_000)
    for choose in RANGES:
        observer = HistogramObserver(choose)
        observer.observe(data)
        low, high = observer.range()
        assert low == pytest.approx(-1, abs=0.05) and high == pytest.approx(3, abs=0.05), choose.__name__


def test_nonnegative_tensors_get_ranges_starting_at_zero():
    data = np.abs(np.random.default_rng(2).normal(0, 1, 50_000))
    h = _histogram(data)
    for choose in RANGES:
        low, high = choose(h.negative, h.positive, h.width)
        assert low == 0.0 and high > 2.5, choose.__name__


def _quantization_error(data, low, high):
    step = (high - low) / 255
    q = np.clip(np.round((data - low) / step), 0, 255) * step + low
    return np.mean((q - data) ** 2)


@pytest.mark.parametrize("seed, tails", [(3, 2.0), (4, 4.0), (5, 30.0)])
def test_mse_range_has_no_more_error_than_minmax(seed, tails):
    data = np.random.default_rng(seed).standard_t(tails, 100_000)
    h = _histogram(data)
    chosen = _quantization_error(data, *mse_range(h.negative, h.positive, h.width))
    minmax = _quantization_error(data, data.min(), data.max())
    assert chosen <= minmax * 1.02
    if tails <= 2.0:  # heavy tails: clipping pays
        assert chosen < 0.5 * minmax


@pytest.mark.parametrize("method", METHODS)
def test_every_method_quantizes_the_model(cnn_path, method):
    x = np.random.default_rng(4).normal(0, 1, (16, 3, 16, 16)).astype(np.float32)
    model = eightbit.quantize(cnn_path, {"x": x}, calibrate=method)
    assert any(n.op_type == "QuantizeLinear" for n in model.graph)


def test_entropy_ignores_the_spike_of_zeros_a_relu_leaves():
    """Zeros are exact on every grid (eq. 2): half the values at 0 must not pull the threshold in."""
    magnitudes = np.abs(np.random.default_rng(6).normal(0, 1, 100_000))
    with_zeros = np.concatenate([magnitudes, np.zeros(100_000)])
    ranges = []
    for data in (magnitudes, with_zeros):
        observer = HistogramObserver(entropy_range)
        observer.observe(data)
        ranges.append(observer.range())
    assert ranges[0][1] == ranges[1][1]
    assert 3.0 < ranges[0][1] < 4.5

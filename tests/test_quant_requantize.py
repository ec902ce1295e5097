from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.quant import FixedPointMultiplier, quantize_multiplier, requantize_fixed_point, requantize_float
from eightbit.quant.requantize import apply_multiplier, rounding_right_shift

INT32 = st.integers(-(2**31) + 1, 2**31 - 1)


@given(st.floats(2**-31, 1 - 2**-24, exclude_max=True))
def test_multiplier_approximates_the_real_value(real):
    fixed = quantize_multiplier(real)
    assert 2**30 <= fixed.multiplier < 2**31
    assert fixed.right_shift >= 0
    assert abs(fixed.as_fraction() - real) <= real * 2**-30


def _round_half_away(value: Fraction) -> int:
    magnitude = abs(value)
    rounded = int(magnitude) + (1 if magnitude - int(magnitude) >= Fraction(1, 2) else 0)
    return rounded if value >= 0 else -rounded


@given(INT32, st.floats(2**-20, 0.999))
def test_fixed_point_product_is_the_exactly_rounded_product(acc, real):
    fixed = quantize_multiplier(real)
    got = int(requantize_fixed_point(np.array([acc]), fixed, 0, -(2**40), 2**40)[0])
    exact = Fraction(acc) * Fraction(fixed.multiplier, 2 ** (31 + fixed.right_shift))
    assert got == _round_half_away(exact)


@given(st.integers(-(2**20), 2**20), st.floats(1.0, 2.0**10))
def test_multipliers_above_one_use_a_left_shift(acc, real):
    fixed = quantize_multiplier(real)
    assert fixed.right_shift == 0 and fixed.left_shift > 0
    assert abs(fixed.as_fraction() - real) <= real * 2**-30
    got = int(apply_multiplier(np.array([acc]), fixed.multiplier, fixed.right_shift, fixed.left_shift)[0])
    assert got == _round_half_away(Fraction(acc) * Fraction(fixed.as_fraction()))


@given(st.integers(-(2**20), 2**20), st.lists(st.floats(2**-20, 0.999), min_size=1, max_size=4))
def test_per_channel_multipliers_broadcast(acc, reals):
    fixed = [quantize_multiplier(r) for r in reals]
    got = apply_multiplier(np.full(len(reals), acc), np.array([f.multiplier for f in fixed]),
                           np.array([f.right_shift for f in fixed]))
    assert got.tolist() == [int(apply_multiplier(np.array([acc]), f.multiplier, f.right_shift)[0]) for f in fixed]


@given(st.integers(-(2**24), 2**24), st.floats(2**-16, 0.999))
def test_float_and_fixed_point_requantization_differ_by_at_most_one(acc, real):
    fixed = quantize_multiplier(real)
    a = requantize_fixed_point(np.array([acc]), fixed, 0, -(2**40), 2**40)
    b = requantize_float(np.array([acc]), fixed.as_fraction(), 0, -(2**40), 2**40)
    assert abs(int(a[0]) - int(b[0])) <= 1


def test_golden_multipliers():
    assert quantize_multiplier(0.5) == FixedPointMultiplier(2**30, 0)
    assert quantize_multiplier(0.25) == FixedPointMultiplier(2**30, 1)
    assert quantize_multiplier(0.75 * 2**-3) == FixedPointMultiplier(3 * 2**29, 3)
    # 1 - epsilon: the mantissa rounds up to 1.0; the largest Q0.31 value stands in.
    assert quantize_multiplier(1 - 2**-40) == FixedPointMultiplier(2**31 - 1, 0)
    # Just below 0.5: the mantissa rounds up and the exponent moves, giving exactly 0.5.
    assert quantize_multiplier(0.5 * (1 - 2**-40)) == FixedPointMultiplier(2**30, 0)
    assert quantize_multiplier(2**-31) == FixedPointMultiplier(2**30, 30)
    assert quantize_multiplier(1.0) == FixedPointMultiplier(2**30, 0, 1)
    assert quantize_multiplier(3.0) == FixedPointMultiplier(3 * 2**29, 0, 2)
    for bad in (0.0, -1.0, 2.0**31):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


def test_rounding_ties_go_away_from_zero():
    assert rounding_right_shift(np.array([5, -5, 6, -6, 7, -7]), 1).tolist() == [3, -3, 3, -3, 4, -4]
    # Exactly half a step: 3 * 0.5 = 1.5 -> 2 and -1.5 -> -2 (one rounding, ties away from zero).
    assert apply_multiplier(np.array([3, -3, 1, -1]), 2**30, 0).tolist() == [2, -2, 1, -1]


def test_saturation_at_integer_limits():
    fixed = quantize_multiplier(0.5)
    assert requantize_fixed_point(np.array([10_000]), fixed, 0, -128, 127).tolist() == [127]
    assert requantize_fixed_point(np.array([-10_000]), fixed, 0, 0, 255).tolist() == [0]
    assert requantize_float(np.array([10_000]), 0.5, 3, 0, 255).tolist() == [255]

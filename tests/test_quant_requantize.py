from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.quant import FixedPointMultiplier, quantize_multiplier, requantize_fixed_point, requantize_float
from eightbit.quant.requantize import rounding_right_shift, saturating_rounding_doubling_high_mul

INT32 = st.integers(-(2**31) + 1, 2**31 - 1)


@given(st.floats(2**-31, 1 - 2**-24, exclude_max=True))
def test_multiplier_approximates_the_real_value(real):
    fixed = quantize_multiplier(real)
    assert 2**30 <= fixed.multiplier < 2**31
    assert fixed.right_shift >= 0
    assert abs(fixed.as_fraction() - real) <= real * 2**-30


@given(INT32, st.floats(2**-20, 0.999))
def test_fixed_point_product_is_within_one_of_the_exact_product(acc, real):
    fixed = quantize_multiplier(real)
    got = int(requantize_fixed_point(np.array([acc]), fixed, 0, -(2**40), 2**40)[0])
    exact = Fraction(acc) * Fraction(fixed.multiplier, 2 ** (31 + fixed.right_shift))
    assert abs(got - exact) <= 1


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
    with pytest.raises(ValueError):
        quantize_multiplier(1.0)


def test_rounding_ties_go_away_from_zero():
    assert rounding_right_shift(np.array([5, -5, 6, -6, 7, -7]), 1).tolist() == [3, -3, 3, -3, 4, -4]
    assert saturating_rounding_doubling_high_mul(np.array([1 << 30]), 1 << 30).tolist() == [1 << 29]


def test_saturation_at_integer_limits():
    fixed = quantize_multiplier(0.5)
    assert requantize_fixed_point(np.array([10_000]), fixed, 0, -128, 127).tolist() == [127]
    assert requantize_fixed_point(np.array([-10_000]), fixed, 0, 0, 255).tolist() == [0]
    assert requantize_float(np.array([10_000]), 0.5, 3, 0, 255).tolist() == [255]

"""C text: types, literals and the arithmetic every generated step shares (docs/quantization.md, eq. 9-11).

The helpers are written so that the C computes exactly what the reference kernels compute in
numpy: 64-bit products, rounding shifts with ties away from zero, int32 saturation after a
left shift. They avoid shifting negative numbers, so the result does not depend on how a C
compiler implements signed shifts.
"""

from __future__ import annotations

import re

import numpy as np

C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t", np.dtype(np.int16): "int16_t",
           np.dtype(np.uint16): "uint16_t", np.dtype(np.int32): "int32_t"}

NUMBERS_PER_LINE = 16

ARITHMETIC = """\
/* round(x / 2^shift), ties away from zero; 1 <= shift <= 62 (eq. 11). */
static inline int64_t eb_round_shift(int64_t x, int shift)
{
    const int64_t half = (int64_t)1 << (shift - 1);
    return x >= 0 ? (x + half) >> shift : -((half - x) >> shift);
}

static inline int64_t eb_saturate32(int64_t x)
{
    return x > INT32_MAX ? INT32_MAX : x < INT32_MIN ? INT32_MIN : x;
}

/* round(acc * 2^left * multiplier / 2^(31 + right)); the left-shifted value saturates to int32 (eq. 10). */
static inline int64_t eb_apply(int64_t acc, int32_t multiplier, int right_shift, int left_shift)
{
    return eb_round_shift(eb_saturate32(acc * ((int64_t)1 << left_shift)) * multiplier, 31 + right_shift);
}

/* eb_apply with the multiplier 2^30 and no left shift, as in power-of-two models (section 9): a shift. */
static inline int64_t eb_shift_apply(int64_t acc, int shift)
{
    return eb_round_shift(eb_saturate32(acc), shift);
}

/* clamp(q, qmin, qmax) */
static inline int32_t eb_clamp(int64_t q, int32_t qmin, int32_t qmax)
{
    return (int32_t)(q < qmin ? qmin : q > qmax ? qmax : q);
}

/* round(numerator / denominator), ties away from zero; denominator > 0. */
static inline int64_t eb_round_divide(int64_t numerator, int64_t denominator)
{
    int64_t magnitude = ((numerator < 0 ? -numerator : numerator) * 2 + denominator) / (2 * denominator);
    return numerator < 0 ? -magnitude : magnitude;
}
"""


def c_type(dtype: np.dtype) -> str:
    """The <stdint.h> type of a code tensor."""
    return C_TYPES[np.dtype(dtype)]


def float_literal(value: float) -> str:
    """A float32 as an exact C99 hexadecimal literal, so the C scales are the model's bits."""
    return float(np.float32(value)).hex() + "f"


def identifier(name: str, taken: set[str]) -> str:
    """A C identifier made from a tensor name, unique among `taken` (which it joins)."""
    base = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_") or "tensor"
    if base[0].isdigit():
        base = "t_" + base
    candidate, count = base, 1
    while candidate in taken:
        count += 1
        candidate = f"{base}_{count}"
    taken.add(candidate)
    return candidate


def c_array(name: str, ctype: str, values: np.ndarray) -> str:
    """`static const ctype name[n] = {...};` with the values in C order."""
    flat = np.asarray(values).reshape(-1)
    numbers = [str(int(v)) for v in flat]
    lines = [", ".join(numbers[i:i + NUMBERS_PER_LINE]) for i in range(0, len(numbers), NUMBERS_PER_LINE)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(numbers)}] = {{\n    {body}\n}};\n"


def per_channel(values: np.ndarray | int, channels: int) -> np.ndarray:
    """A per-tensor or per-channel parameter as one value per channel."""
    flat = np.asarray(values, dtype=np.int64).reshape(-1)
    return np.broadcast_to(flat, (channels,)) if flat.size == 1 else flat

"""The affine mapping between real values and integers (docs/quantization.md, section 1)."""

from __future__ import annotations

import numpy as np

from eightbit.config import IntegerFormat
from eightbit.quant.power_of_two import power_of_two_scale

# (scale, zero point) of one tensor's grid, per tensor or per channel.
QParams = tuple[np.ndarray, np.ndarray]

# Scales are stored as float32 in ONNX; below this they would be subnormal.
_SMALLEST_SCALE = float(np.finfo(np.float32).tiny)


# DynamicQuantizeLinear's codes: uint8 over the whole range (eq. 30).
_RUN_TIME = IntegerFormat(bits=8, signed=False)


def choose_qparams(
    minimum: np.ndarray | float, maximum: np.ndarray | float, fmt: IntegerFormat
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point for the observed range [minimum, maximum] (eq. 2-4, 22).

    Works elementwise, so per-channel ranges give per-channel parameters. The range is
    first widened to contain 0 so that real zero is exactly representable (eq. 2).
    Returns (scale as float32, zero_point in fmt's integer type).
    """
    low = np.minimum(np.asarray(minimum, dtype=np.float64), 0.0)
    high = np.maximum(np.asarray(maximum, dtype=np.float64), 0.0)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError("cannot choose quantization parameters for a range that is not finite")
    if fmt.symmetric:
        # eq. 4: zero_point 0, the larger magnitude maps to qmax.
        scale = np.maximum(-low, high) / fmt.qmax
    else:
        # eq. 3: the whole range maps onto [qmin, qmax].
        scale = (high - low) / (fmt.qmax - fmt.qmin)
    scale = np.where(scale == 0.0, 1.0, np.maximum(scale, _SMALLEST_SCALE)).astype(np.float32)
    if fmt.power_of_two:
        scale = power_of_two_scale(scale)  # eq. 22: the grid still covers the range
    if fmt.symmetric:
        zero_point = np.zeros(scale.shape, dtype=fmt.numpy_dtype)
    else:
        # eq. 3: zero_point is an integer, rounded once; real 0 then maps to it exactly.
        zero_point = np.clip(np.rint(fmt.qmin - low / scale.astype(np.float64)), fmt.qmin, fmt.qmax)
        zero_point = zero_point.astype(fmt.numpy_dtype)
    return scale, zero_point


def _broadcast(param: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    param = np.asarray(param)
    if param.ndim == 0 or axis is None:
        return param
    shape = [1] * ndim
    shape[axis] = param.size
    return param.reshape(shape)


def quantize(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, fmt: IntegerFormat, axis: int | None = None
) -> np.ndarray:
    """q = clamp(round(x / scale) + zero_point, qmin, qmax), round half to even (eq. 5).

    Rounds x/scale first and then adds the integer zero point: never round
    (x - min)/scale, which moves real zero off the grid. Computed in float32 as
    ONNX QuantizeLinear is.
    """
    x = np.asarray(x, dtype=np.float32)
    s = _broadcast(np.asarray(scale, dtype=np.float32), x.ndim, axis)
    z = _broadcast(np.asarray(zero_point), x.ndim, axis).astype(np.float32)
    q = np.rint(x / s) + z
    return np.clip(q, fmt.qmin, fmt.qmax).astype(fmt.numpy_dtype)


def dequantize(
    q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None = None
) -> np.ndarray:
    """real = scale * (q - zero_point) (eq. 1), in float32."""
    q = np.asarray(q)
    s = _broadcast(np.asarray(scale, dtype=np.float32), q.ndim, axis)
    z = _broadcast(np.asarray(zero_point), q.ndim, axis).astype(np.int64)
    return (s * (q.astype(np.int64) - z).astype(np.float32)).astype(np.float32)


def quantize_bias(
    bias: np.ndarray, input_scale: np.ndarray | float, weight_scale: np.ndarray, fmt: IntegerFormat
) -> tuple[np.ndarray, np.ndarray]:
    """Bias as integers at scale input_scale * weight_scale, zero_point 0 (eq. 7).

    At that scale the bias adds straight into the integer accumulator of x*w.
    Returns (integer bias, its float32 scale).
    """
    scale = (np.float32(input_scale) * np.asarray(weight_scale, dtype=np.float32)).astype(np.float32)
    scale = np.broadcast_to(scale, np.shape(bias)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    q = np.rint(np.asarray(bias, dtype=np.float64) / safe.astype(np.float64))
    return np.clip(q, fmt.qmin, fmt.qmax).astype(fmt.numpy_dtype), safe


def quantize_at_run_time(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """(codes, scale, zero point) of `x` as ONNX DynamicQuantizeLinear makes them (eq. 30): uint8, the
    range widened to hold 0, scale and zero point in float32 arithmetic as the operator defines them."""
    low, high = min(float(x.min(initial=0.0)), 0.0), max(float(x.max(initial=0.0)), 0.0)
    if high == low:  # all zeros: any scale represents them; ONNX's reference evaluator takes 1 / 255
        high = low + 1.0
    scale = np.float32((high - low) / 255.0)
    zero_point = np.uint8(np.clip(np.rint(np.float32(0.0 - low) / scale), 0, 255))
    return quantize(x, scale, zero_point, _RUN_TIME), scale, zero_point


def regrid(scale: np.ndarray, zero_point: np.ndarray, fmt: IntegerFormat) -> tuple[np.ndarray, np.ndarray]:
    """The same grid {scale * (q - zero_point)} stored in `fmt`'s integer type (eq. 1).

    Moving between a signed and an unsigned type of the same width shifts codes and zero point
    by 2^(bits-1): int8 with zero point z is uint8 with z + 128, every real value unchanged.
    Raises ValueError when `fmt` cannot hold the grid: another width, a nonzero zero point in a
    symmetric format, a scale that is not a power of two in a power-of-two format.
    """
    zero_point = np.asarray(zero_point)
    scale = np.asarray(scale, dtype=np.float32)
    if zero_point.dtype.itemsize * 8 != fmt.bits:
        raise ValueError(f"{zero_point.dtype} codes are not {fmt.bits}-bit")
    shifted = zero_point.astype(np.int64)
    signed = np.issubdtype(zero_point.dtype, np.signedinteger)
    if signed != fmt.signed:
        shifted = shifted + (2 ** (fmt.bits - 1) if signed else -(2 ** (fmt.bits - 1)))
    if fmt.symmetric and np.any(shifted != 0):
        raise ValueError(f"zero point {shifted.reshape(-1)[0]} is not 0 (the format is symmetric)")
    if fmt.power_of_two and np.any(np.frexp(scale)[0] != 0.5):
        raise ValueError(f"scale {scale.reshape(-1)[0]:.6g} is not a power of two")
    return scale, shifted.astype(fmt.numpy_dtype)

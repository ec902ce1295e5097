"""Typed, frozen configuration: every default is defined here, once.

A `Scheme` says how each kind of tensor is stored as integers. The presets are the
only schemes the command line offers; building a `Scheme` by hand is for the API.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np


class Granularity(enum.Enum):
    """How many (scale, zero_point) pairs a tensor gets."""

    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"


@dataclasses.dataclass(frozen=True)
class IntegerFormat:
    """An integer type and how real values map onto it (docs/quantization.md, eq. 1-6).

    `narrow` drops the most negative code of a signed type (-128 for int8) so that a
    symmetric range maps onto [-127, 127] and negation never overflows.
    """

    bits: int = 8
    signed: bool = False
    symmetric: bool = False
    granularity: Granularity = Granularity.PER_TENSOR
    narrow: bool = False
    # Codes use only this many bits of the storage type (7 keeps u8 x s8 pair sums inside int16).
    value_bits: int | None = None
    # Scales are powers of two (eq. 22), so requantization is a shift.
    power_of_two: bool = False

    def __post_init__(self) -> None:
        if self.bits not in (8, 16, 32):
            raise ValueError(f"bits must be 8, 16 or 32 (storage types ONNX has), got {self.bits}")
        if self.value_bits is not None and not 2 <= self.value_bits <= self.bits:
            raise ValueError(f"value_bits must be in [2, {self.bits}], got {self.value_bits}")
        if self.symmetric and not self.signed:
            raise ValueError("a symmetric format needs a signed type (zero_point 0 in the middle of the range)")
        if self.power_of_two and not self.symmetric:
            raise ValueError("power-of-two scales need a symmetric format (zero_point 0)")

    @property
    def _value_bits(self) -> int:
        return self.value_bits or self.bits

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        low = -(2 ** (self._value_bits - 1))
        return low + 1 if self.narrow else low

    @property
    def qmax(self) -> int:
        return 2 ** (self._value_bits - 1) - 1 if self.signed else 2**self._value_bits - 1

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(f"{'int' if self.signed else 'uint'}{self.bits}")


def integer_format(dtype: np.dtype) -> IntegerFormat:
    """The full range of an integer storage type (a QDQ model's codes: uint8 [0, 255], int8 [-128, 127])."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        raise ValueError(f"quantized tensors must be integers, got {dtype}")
    return IntegerFormat(bits=dtype.itemsize * 8, signed=dtype.kind == "i")


class SchemeKind(enum.Enum):
    WEIGHTS_ONLY = "weights"
    STATIC = "static"
    # Weights as integers offline, activations quantized at run time (docs/quantization.md, section 13).
    DYNAMIC = "dynamic"


@dataclasses.dataclass(frozen=True)
class Scheme:
    """What a quantized model stores and computes in integers."""

    name: str
    kind: SchemeKind
    weights: IntegerFormat
    activations: IntegerFormat | None = None
    bias_bits: int = 32
    # How activation ranges are chosen when the caller does not say (CALIBRATION_METHODS).
    default_calibration: str = "minmax"
    # An integer Gemm or MatMul that no int8 op reads gives its output in float, from its accumulator
    # (docs/quantization.md, eq. 7c), rather than requantized to 8 bits: off where integer-only hardware
    # is the point (po2).
    float_outputs: bool = True
    # The worst output SQNR (dB, pre-softmax) on the calibration samples that quantize keeps float the
    # fewest tensors to reach when the caller names no budget (docs/quantization.md, section 11b); None: no
    # such floor (po2, where integer-only hardware is the point). The second applies where an output is a
    # softmax's class probabilities (measured on the softmax's input).
    default_min_sqnr_db: float | None = None
    default_min_sqnr_db_classes: float | None = None
    # Biases stay float (TensorRT adds them in float inside its fused kernels and takes no int32
    # DequantizeLinear), rather than int32 codes at s_x * s_w (eq. 7).
    float_bias: bool = False
    # A Relu or Clip(0, b) after an int8 op runs in that op's kernel, before its output is quantized (TensorRT
    # fuses them), with no Q/DQ pair between; asymmetric grids get this from eq. 8 anyway.
    activations_in_kernel: bool = False
    # The format of an activation whose range has no negative values, where it differs from `activations`:
    # OpenVINO's u8 with zero point 0 beside s8 activations, so that no grid has a zero point to subtract.
    nonnegative_activations: IntegerFormat | None = None

    def __post_init__(self) -> None:
        if not 8 <= self.bias_bits <= 32:
            raise ValueError(f"bias_bits must be in [8, 32], got {self.bias_bits}")

    def activation_format(self, low: float, unsigned: bool = False) -> IntegerFormat:
        """The format of an activation whose range starts at `low`: `nonnegative_activations` where it is set and
        `low` >= 0 (or the tensor must have an `unsigned` grid), else `activations`."""
        if self.nonnegative_activations is not None and (low >= 0 or unsigned):
            return self.nonnegative_activations
        return self.activations

    def format_of(self, zero_point: np.ndarray) -> IntegerFormat:
        """The activation format a grid with this zero point was chosen in (its storage type tells them apart)."""
        unsigned = self.nonnegative_activations
        if unsigned is not None and np.asarray(zero_point).dtype == unsigned.numpy_dtype:
            return unsigned
        return self.activations

    def with_weight_bits(self, bits: int | None) -> Scheme:
        """The same scheme with weight codes of `bits` bits (2-8; None: the storage type's 8)."""
        return dataclasses.replace(self, weights=dataclasses.replace(self.weights, value_bits=bits))

    @property
    def bias(self) -> IntegerFormat:
        """Biases: int32 storage (what ONNX Runtime's integer kernels take), bias_bits of values."""
        return IntegerFormat(bits=32, signed=True, symmetric=True, value_bits=self.bias_bits)


# u8 activations x s8 weights: the fastest pairing on x86 with VNNI (docs/quantization.md, section 4).
ACTIVATIONS_U8 = IntegerFormat(bits=8, signed=False, symmetric=False)
WEIGHTS_S8_PER_CHANNEL = IntegerFormat(
    bits=8, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL, narrow=True
)
# The same, with codes in [-63, 63]: |u8 * s8 + u8 * s8| <= 2 * 255 * 63 < 2^15, so x86 CPUs
# without VNNI (vpmaddubsw, int16 pair sums) compute exactly what the model says.
WEIGHTS_S7_PER_CHANNEL = dataclasses.replace(WEIGHTS_S8_PER_CHANNEL, value_bits=7)
BIAS_S32 = IntegerFormat(bits=32, signed=True, symmetric=True)
# The power-of-two scheme for integer-only hardware: symmetric s8 everywhere, scales 2^k (eq. 22).
ACTIVATIONS_S8_PO2 = IntegerFormat(bits=8, signed=True, symmetric=True, power_of_two=True)
WEIGHTS_S8_PO2 = IntegerFormat(bits=8, signed=True, symmetric=True, narrow=True, power_of_two=True)

# Symmetric s8 activations with any scale: TensorRT's int8 (zero point 0, [-128, 127]).
ACTIVATIONS_S8 = IntegerFormat(bits=8, signed=True, symmetric=True)
# 16-bit activations with a zero point: the A16W8 mode NPUs run (QNN, TFLite's 16x8).
ACTIVATIONS_U16 = IntegerFormat(bits=16, signed=False, symmetric=False)

# The eightbit scheme's floors. Held out, PP-OCRv4 det's text map agrees with float to 0.9876 at 23.4 dB
# and 0.9924 at 27.4 dB, and every other model of BENCHMARKS.md is above 25 dB as built. A classifier's
# top-1 flips where the error of its top two scores exceeds their gap, which on inputs near a tie is
# small: PP-OCR cls (pre-softmax, 1000 lines) agrees 0.980 at 20.4 dB, 0.988 at 24.1 and 0.990 at
# 27.4, the last held to 30 dB on its calibration samples (docs/quantization.md, section 11b).
DEFAULT_MIN_SQNR_DB = 25.0
DEFAULT_MIN_SQNR_DB_CLASSES = 30.0

SCHEMES: dict[str, Scheme] = {
    "eightbit": Scheme(
        name="eightbit", kind=SchemeKind.STATIC, weights=WEIGHTS_S8_PER_CHANNEL, activations=ACTIVATIONS_U8,
        default_min_sqnr_db=DEFAULT_MIN_SQNR_DB, default_min_sqnr_db_classes=DEFAULT_MIN_SQNR_DB_CLASSES,
    ),
    "dynamic": Scheme(
        name="dynamic", kind=SchemeKind.DYNAMIC, weights=WEIGHTS_S8_PER_CHANNEL, activations=ACTIVATIONS_U8
    ),
    "weights": Scheme(name="weights", kind=SchemeKind.WEIGHTS_ONLY, weights=WEIGHTS_S8_PER_CHANNEL),
    "po2": Scheme(name="po2", kind=SchemeKind.STATIC, weights=WEIGHTS_S8_PO2, activations=ACTIVATIONS_S8_PO2,
                  bias_bits=16, default_calibration="mse", float_outputs=False),
}
BIAS_BITS = (16, 32)
# Weight granularity a preset can be switched to from the command line (Granularity values).
WEIGHT_GRANULARITIES = tuple(g.value for g in Granularity)
DEFAULT_SCHEME = "eightbit"

# Weight ranges: "full" [-127, 127]; "7bit" [-63, 63]; "auto": full where the CPU doing the
# quantization has VNNI (or is not x86), 7bit where u8 x s8 products can saturate.
WEIGHT_RANGES = ("auto", "full", "7bit")
DEFAULT_WEIGHT_RANGE = "auto"

CALIBRATION_METHODS = ("minmax", "percentile", "mse", "entropy", "auto")

# How weights become codes (docs/quantization.md, section 2a): "gptq" chooses each layer's codes
# from its calibration inputs (eq. 34); "nearest" rounds each weight on its own (eq. 5); "auto"
# builds the model both ways and keeps gptq where it agrees better with the float model on the
# calibration samples (nearest without samples). Default, indexed by "is the weights-only scheme":
# measured, gptq gains on every model where the activations stay float; where they are quantized
# too the gain is mixed, so the static schemes measure.
WEIGHT_ROUNDINGS = ("auto", "gptq", "nearest")

# How hard quantize searches (--effort; eightbit.pipeline.options.Effort): fast and deterministic by default.
EFFORTS = ("fast", "max")

# Where `run` and `compare` execute a model: ONNX Runtime, or the integer reference kernels.
BACKENDS = ("ort", "reference")

# The runtime a quantized model is made for (--target): its graph forms and its speed check follow that
# runtime's kernels (docs/quantization.md, sections 6b and 11c); tensorrt and npu change the integer formats
# too (section 6c), and their models run in ONNX Runtime here only to measure their agreement.
TARGETS = ("ort", "openvino", "tensorrt", "npu")
DEFAULT_TARGET = "ort"

# Number of samples the quantize report evaluates when no held-out data is given.
DEFAULT_REPORT_SAMPLES = 16
# Samples fed to the runtime at once where the model's batch dimension is free.
DEFAULT_BATCH = 8
# ONNX Runtime threads for calibration, evaluation and timing.
DEFAULT_THREADS = 2
# More runtime threads than this per CPU only slow a run down, and each takes memory of its own.
MOST_THREADS_PER_CPU = 4
# Lowest opset the converter works in: per-axis QuantizeLinear/DequantizeLinear need 13, HardSwish 14.
MIN_OPSET = 14


def scheme_named(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scheme {name!r}; choose one of: {', '.join(SCHEMES)}") from None

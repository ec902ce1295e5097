"""What a quantize call was asked (QuantizeOptions) and everything that follows from it, fixed before any work
(Resolved): the one home of quantize's defaults and of the margin its measured choices are held to.

The command line maps its flags onto QuantizeOptions one to one, and the Python API takes the same values.
resolve() checks every option against the others, the model and the samples, so that a bad combination is
refused before anything is built, and turns each "auto" or default into the value it stands for, with the
reason where it is not plain from the options.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import math
import os
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from eightbit.config import (
    ACTIVATIONS_S8,
    ACTIVATIONS_U16,
    BIAS_BITS,
    CALIBRATION_METHODS,
    DEFAULT_SCHEME,
    DEFAULT_THREADS,
    MOST_THREADS_PER_CPU,
    WEIGHT_GRANULARITIES,
    Granularity,
    Scheme,
    SchemeKind,
    scheme_named,
)
from eightbit.datasets import Samples
from eightbit.errors import InputError
from eightbit.fallback import Budget
from eightbit.ir.graph import graph_values
from eightbit.measure.metrics import compared_values
from eightbit.passes.block_forms import BlockForm
from eightbit.passes.read_qdq import given_grid
from eightbit.quant.blocks import BLOCK_BITS, BLOCK_SIZES, DEFAULT_BLOCK_SIZE, BlockFormat, block_format

# A measured choice (weight codes, equalization, bias correction, per-tensor ranges) is taken where it raises
# the worst output SQNR on the calibration samples by at least this much; one that only speeds the model up
# (hard-swish as gates, run-time quantization of the dynamic scheme) where it lowers it by at most this much.
MARGIN_DB = 0.5


class Effort(enum.Enum):
    """How hard quantize searches (docs/quantization.md, section 11).

    FAST (the default): every measured choice is one candidate built and measured once; a budget keeps float
    the fewest grids from the input, each probe built with the choices the all-integer model took; nothing is
    timed, so the model written depends only on the input, the options and the CPU's instruction set.
    MAX: every choice is measured anew wherever it could change (each budget probe decides its hard-swish form
    again), a budget's search also ranks every grid by its own harm and tries the most harmful first, and the
    speed check times the model in the target runtime (its verdict follows the machine's load).
    """

    FAST = "fast"
    MAX = "max"


class Target(enum.Enum):
    """The runtime a model is made for (docs/quantization.md, sections 6b, 6c and 11c)."""

    ORT = "ort"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"
    NPU = "npu"

    @property
    def runs_here(self) -> bool:
        """Whether the target runtime runs on this machine, so that it can time a model (ORT, OpenVINO); a GPU
        engine or an NPU cannot."""
        return self in (Target.ORT, Target.OPENVINO)


class WeightRange(enum.Enum):
    """FULL: codes in [-127, 127]; SEVEN_BIT: [-63, 63], exact on x86 CPUs without VNNI; AUTO: full where this
    CPU multiplies u8 x s8 exactly, else measured (docs/quantization.md, section 4)."""

    AUTO = "auto"
    FULL = "full"
    SEVEN_BIT = "7bit"


class WeightRounding(enum.Enum):
    """NEAREST: eq. 5; GPTQ: codes chosen from the layer's calibration inputs (eq. 34); AUTO: both built, eq. 34's
    kept where measured better (docs/quantization.md, section 2a)."""

    AUTO = "auto"
    GPTQ = "gptq"
    NEAREST = "nearest"


def _member(kind: type[enum.Enum], value, flag: str) -> enum.Enum:
    """`value` as a member of `kind` (a member, or its value as the command line spells it)."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise InputError(f"unknown {flag} {value!r}; choose one of: {choices}") from None


@dataclasses.dataclass(frozen=True)
class QuantizeOptions:
    """What quantize is asked, as given (the command line's flags, one field each; strings or members)."""

    scheme: str | Scheme = DEFAULT_SCHEME
    calibrate: str | None = None  # CALIBRATION_METHODS; None: the scheme's
    weight_range: str | WeightRange = WeightRange.AUTO
    bias_bits: int | None = None
    weight_granularity: str | None = None
    weight_rounding: str | WeightRounding | None = None  # None: the scheme's
    weight_bits: int | None = None  # 4 or 8 (--scheme weights); None: 8
    block_size: int | None = None  # BLOCK_SIZES; None: per channel, or DEFAULT_BLOCK_SIZE for 4 bits
    weight_symmetric: bool | None = None  # blocks without zero points; None: at 8 bits only
    exclude: tuple[str, ...] = ()  # node names (globs) or op types kept float
    eight_bit_weights: tuple[str, ...] = ()  # node names (globs) or op types whose weights take 8-bit blocks
    min_sqnr_db: float | str | None = "auto"  # dB, "auto" (the scheme's floor), "off" or None (no budget)
    max_drop_points: float | None = None
    metric: Callable[[np.ndarray, np.ndarray], float] | None = None
    bias_correction: bool = True
    equalization: bool = True
    speed_check: bool | None = None  # None: the effort's (MAX: on; FAST: off, as it times the model)
    target: str | Target = Target.ORT
    effort: str | Effort = Effort.FAST
    threads: int = DEFAULT_THREADS
    show_progress: bool = False


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Every option of one quantize call with its default, "auto" and combination worked out."""

    scheme: Scheme
    calibrate: str  # a CALIBRATION_METHODS name; "auto" only for a static scheme with samples
    weight_range: WeightRange
    weight_rounding: WeightRounding  # AUTO only for a static scheme with samples
    blocks: BlockFormat | None  # weights in blocks (the weights scheme only); None: per channel or tensor
    excluded: dict[str, str]  # node name -> why it stays float (--exclude)
    eight_bit: frozenset[str]  # nodes whose weights take 8-bit blocks under 4-bit ones (a recipe's weight_bits = 8)
    budget: Budget | None
    metric: Callable[[np.ndarray, np.ndarray], float] | None
    bias_correction: bool  # resolved: a static scheme, samples, weights not given
    equalization: bool  # resolved: a static scheme, samples, no grids given
    speed_check: bool  # resolved: a static scheme with samples
    target: Target
    effort: Effort
    threads: int
    show_progress: bool

    @property
    def static(self) -> bool:
        return self.scheme.kind is SchemeKind.STATIC

    @property
    def block_form(self) -> BlockForm:
        """How blocks are written for the target: ONNX Runtime's block operators, or standard ONNX (opset 21)
        for every other runtime."""
        return BlockForm.RUNTIME if self.target is Target.ORT else BlockForm.STANDARD


def gives_weight_grids(model: ir.Model) -> bool:
    """Whether a weight of `model` comes with its own grid (a QDQ model's): its codes are kept."""
    return any(given_grid(value) is not None for value in model.graph.initializers.values())


def gives_grids(model: ir.Model) -> bool:
    """Whether any tensor of `model` comes with its own grid (a QDQ model): its ranges are not ours to move."""
    return any(given_grid(value) is not None for value in graph_values(model.graph))


def opset_for(options: QuantizeOptions) -> int | None:
    """The opset a model is raised to before anything else: 21 for the NPU target's 16-bit activations (uint16
    QuantizeLinear came in opset 21); None where the model's own will do."""
    return 21 if _member(Target, options.target, "target") is Target.NPU else None


def _for_target(scheme: Scheme, target: Target) -> Scheme:
    """The scheme in the formats `target` takes (docs/quantization.md, sections 6c and 6d): OpenVINO, activations
    with zero point 0 (u8 where the range has no negative values, s8 symmetric elsewhere); TensorRT, symmetric
    s8 activations, float biases and activations fused into the op before them; an NPU, 16-bit activations
    with 8-bit weights (A16W8)."""
    if target is Target.OPENVINO and scheme.kind is SchemeKind.STATIC and not scheme.activations.symmetric:
        return dataclasses.replace(scheme, activations=ACTIVATIONS_S8, nonnegative_activations=scheme.activations)
    if target.runs_here:
        return scheme
    if scheme.kind is not SchemeKind.STATIC:
        raise InputError(f"--target {target.value} takes the static schemes (eightbit, po2), not {scheme.name!r}; "
                         "use --target ort for it")
    if target is Target.TENSORRT:
        activations = dataclasses.replace(ACTIVATIONS_S8, power_of_two=scheme.activations.power_of_two)
        return dataclasses.replace(scheme, activations=activations, float_bias=True, activations_in_kernel=True)
    if scheme.activations.power_of_two:
        raise InputError("--target npu stores 16-bit activations, which --scheme po2 does not: drop one of the two")
    return dataclasses.replace(scheme, activations=ACTIVATIONS_U16)


def _scheme(options: QuantizeOptions) -> Scheme:
    """The scheme named, in the target's formats, with the bias width and weight granularity asked."""
    scheme = options.scheme
    if not isinstance(scheme, Scheme):
        try:
            scheme = scheme_named(scheme)
        except ValueError as error:
            raise InputError(str(error)) from None
    if options.bias_bits is not None:
        if options.bias_bits not in BIAS_BITS:
            raise InputError(f"bias width {options.bias_bits} is not offered; choose one of: "
                             f"{', '.join(map(str, BIAS_BITS))}")
        scheme = dataclasses.replace(scheme, bias_bits=options.bias_bits)
    if options.weight_granularity is not None:
        if options.weight_granularity not in WEIGHT_GRANULARITIES:
            raise InputError(f"unknown weight granularity {options.weight_granularity!r}; choose one of: "
                             f"{', '.join(WEIGHT_GRANULARITIES)}")
        weights = dataclasses.replace(scheme.weights, granularity=Granularity(options.weight_granularity))
        scheme = dataclasses.replace(scheme, weights=weights)
    return _for_target(scheme, _member(Target, options.target, "target"))


def _rounding(options: QuantizeOptions, scheme: Scheme, samples: Samples | None,
              model: ir.Model) -> WeightRounding:
    """The weight rounding asked, or the scheme's: GPTQ for weights only (measured: eq. 34 gains on every model
    whose activations stay float), AUTO for the static schemes; NEAREST where there is nothing to choose codes
    from, no stored activation grid (dynamic), or the model gives its own weight codes."""
    asked = None if options.weight_rounding is None else _member(WeightRounding, options.weight_rounding,
                                                                  "weight rounding")
    dynamic = scheme.kind is SchemeKind.DYNAMIC
    if asked is WeightRounding.GPTQ and (samples is None or dynamic):
        raise InputError("--weight-rounding gptq chooses codes from calibration inputs: it needs --calibration and "
                         "the eightbit, po2 or weights scheme")
    if samples is None or dynamic or gives_weight_grids(model):
        return WeightRounding.NEAREST
    if scheme.kind is SchemeKind.WEIGHTS_ONLY and asked in (None, WeightRounding.AUTO):
        return WeightRounding.GPTQ
    return asked or WeightRounding.AUTO


def _blocks(options: QuantizeOptions, scheme: Scheme) -> BlockFormat | None:
    """Weights in blocks where asked (--weight-bits 4, or --block-size): the weights scheme only, 4 or 8 bits,
    blocks of DEFAULT_BLOCK_SIZE where 4 bits are asked without a size, zero points per block at 4 bits (a
    block's range is rarely centred on 0, and 16 codes cannot spare the half a symmetric grid leaves unused)
    and none at 8, unless --weight-symmetric says."""
    bits, size = options.weight_bits, options.block_size
    if bits is not None and bits not in BLOCK_BITS:
        raise InputError(f"--weight-bits {bits}: give one of {', '.join(map(str, BLOCK_BITS))}")
    if size is not None and size not in BLOCK_SIZES:
        raise InputError(f"--block-size {size}: give one of {', '.join(map(str, BLOCK_SIZES))}")
    if bits in (None, 8) and size is None:
        if options.weight_symmetric is not None:
            raise InputError("--weight-symmetric/--weight-asymmetric choose block grids: give --block-size too")
        return None
    if scheme.kind is not SchemeKind.WEIGHTS_ONLY:
        asked = " ".join(f"--{flag} {value}" for flag, value in (("weight-bits", bits), ("block-size", size)) if value)
        raise InputError(f"{asked}: weights in blocks are for --scheme weights; the {scheme.name} scheme keeps "
                         "8-bit weights per channel")
    if options.weight_granularity is not None:
        raise InputError("--weight-granularity and --block-size both say how weights share grids; give one of them")
    bits = bits or 8
    symmetric = options.weight_symmetric if options.weight_symmetric is not None else bits == 8
    return block_format(bits, size or DEFAULT_BLOCK_SIZE, symmetric)


def _matched(pattern: str, model: ir.Model, what: str) -> list[str]:
    """The nodes a pattern names: those whose name it matches as a glob (fnmatch, case-sensitive) or whose op
    type it is; one that matches no node is refused (a misspelt name would otherwise leave the layer the user
    meant as it was)."""
    matched = [node.name for node in model.graph if node.name and (fnmatch.fnmatchcase(node.name, pattern)
                                                                  or node.op_type == pattern)]
    if not matched:
        raise InputError(f"{what} {pattern!r} matches no node of the model; give node names (globs such "
                         "as 'encoder.*' allowed) or op types, as `eightbit inspect` lists them")
    return matched


def _excluded(patterns: tuple[str, ...], model: ir.Model) -> dict[str, str]:
    """The nodes --exclude names (_matched), each with its reason."""
    excluded: dict[str, str] = {}
    for pattern in patterns:
        for name in _matched(pattern, model, "--exclude"):
            excluded.setdefault(name, f"excluded (--exclude {pattern})")
    return excluded


def _eight_bit(patterns: tuple[str, ...], model: ir.Model, blocks: BlockFormat | None) -> frozenset[str]:
    """The nodes a recipe's per-node `weight_bits = 8` names (_matched): under 4-bit blocks only."""
    if patterns and (blocks is None or blocks.bits != 4):
        raise InputError(f"weight_bits = 8 for {', '.join(patterns)}: per-node weight bits choose between 4- and "
                         "8-bit blocks; set weight_bits = 4 in [quantize] (the weights scheme) or drop them")
    return frozenset(name for pattern in patterns for name in _matched(pattern, model, "weight_bits = 8 for"))


def _calibration_method(options: QuantizeOptions, scheme: Scheme, samples: Samples | None) -> str:
    method = options.calibrate or scheme.default_calibration
    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method {method!r}; choose one of: {', '.join(CALIBRATION_METHODS)}")
    if options.calibrate is not None and scheme.kind is not SchemeKind.STATIC:
        raise InputError(f"--calibrate {options.calibrate}: the {scheme.name} scheme calibrates no activation "
                         "ranges; drop --calibrate or choose a static scheme")
    if method == "auto" and scheme.kind is SchemeKind.STATIC and samples is None:
        raise InputError("--calibrate auto measures each tensor's methods on calibration samples: pass "
                         "--calibration samples.npz")
    if method in ("mse", "entropy", "auto") and scheme.activations is not None and scheme.activations.bits != 8:
        raise InputError(f"--calibrate {method} chooses ranges for 8-bit grids, and these activations are "
                         f"{scheme.activations.bits}-bit: use minmax (the default) or percentile")
    return method


def _min_sqnr_db(options: QuantizeOptions, scheme: Scheme, samples: Samples | None,
                 model: ir.Model) -> tuple[float | None, bool]:
    """The --min-sqnr limit in dB, and whether it is the scheme's floor: as given or, for "auto", the scheme's
    floor (its floor for class probabilities where an output is a softmax's) where it has one, there are
    calibration samples to measure on, no --max-drop and the model brings no grids of its own."""
    asked = options.min_sqnr_db
    if not isinstance(asked, str):
        return asked, False
    if asked == "off":
        return None, False
    if asked != "auto":
        raise InputError(f"--min-sqnr takes a number of dB, auto or off, not {asked!r}")
    if scheme.default_min_sqnr_db is None or samples is None or options.max_drop_points is not None \
            or gives_grids(model):
        return None, True
    classes = any(value.name != name for name, value in compared_values(model).items())
    if scheme.default_min_sqnr_db_classes is not None and classes:
        return scheme.default_min_sqnr_db_classes, True
    return scheme.default_min_sqnr_db, True


def _budget(options: QuantizeOptions, scheme: Scheme, samples: Samples | None, model: ir.Model,
            blocks: BlockFormat | None) -> Budget | None:
    """The budget asked for, checked: one of the two, a static scheme (or --min-sqnr for 4-bit blocks: the
    weights that take 8 bits instead), calibration samples, a finite limit."""
    min_sqnr, floor = _min_sqnr_db(options, scheme, samples, model)
    max_drop, metric = options.max_drop_points, options.metric
    if min_sqnr is None and max_drop is None:
        if metric is not None:
            raise InputError("a metric is what --max-drop measures; give max_drop too")
        return None
    if min_sqnr is not None and max_drop is not None:
        raise InputError("--min-sqnr and --max-drop are two budgets for the same search; give one of them")
    flag, limit = ("--min-sqnr", min_sqnr) if min_sqnr is not None else ("--max-drop", max_drop)
    four_bit_blocks = blocks is not None and blocks.bits == 4 and min_sqnr is not None
    if scheme.kind is not SchemeKind.STATIC and not four_bit_blocks:
        also = " and to --scheme weights --weight-bits 4" if min_sqnr is not None else ""
        what = "--scheme weights without --weight-bits 4" if scheme.kind is SchemeKind.WEIGHTS_ONLY else \
            repr(scheme.name)
        raise InputError(f"{flag} applies to the static schemes (eightbit, po2){also}, not to {what}")
    if samples is None:
        raise InputError(f"{flag} measures the model on calibration samples; pass --calibration samples.npz")
    if four_bit_blocks and _member(WeightRounding, options.weight_rounding or "auto", "weight rounding") \
            is WeightRounding.NEAREST:
        raise InputError("--min-sqnr with --weight-bits 4 ranks the weights by their calibration inputs, which "
                         "--weight-rounding nearest does not read: drop one of the two")
    if not math.isfinite(limit) or (max_drop is not None and max_drop < 0):
        raise InputError(f"{flag} must be a finite number{' of dB' if min_sqnr is not None else ', 0 or more'}, "
                         f"got {limit}")
    if min_sqnr is not None:
        return Budget.min_sqnr(min_sqnr, floor)
    if metric is None:
        return Budget.max_drop(max_drop)
    return Budget.max_drop(max_drop, getattr(metric, "__name__", "the metric").replace("_", " "))


def check_options(options: QuantizeOptions) -> None:
    """What can be checked before the model is read: the names of every enumerated option, and the threads."""
    _member(Target, options.target, "target")
    _member(Effort, options.effort, "effort")
    _member(WeightRange, options.weight_range, "weight range")
    if options.weight_rounding is not None:
        _member(WeightRounding, options.weight_rounding, "weight rounding")
    check_threads(options.threads)


def check_threads(threads: int) -> None:
    """--threads within 1 and MOST_THREADS_PER_CPU a CPU of this machine."""
    most = MOST_THREADS_PER_CPU * (os.cpu_count() or 1)
    if not 1 <= threads <= most:
        raise InputError(f"--threads {threads}: give 1 to {most} ({MOST_THREADS_PER_CPU} per CPU here)")


def resolve(options: QuantizeOptions, model: ir.Model, samples: Samples | None) -> Resolved:
    """Every option of a quantize call of `model` (prepared) on `samples` worked out, or InputError naming the
    option to change."""
    check_options(options)
    scheme = _scheme(options)
    static = scheme.kind is SchemeKind.STATIC
    effort = _member(Effort, options.effort, "effort")
    with_samples = samples is not None
    speed_check = options.speed_check if options.speed_check is not None else effort is Effort.MAX
    target = _member(Target, options.target, "target")
    if options.speed_check and not target.runs_here:
        raise InputError(f"--speed-check times the model in its target runtime, and {target.value} does not run "
                         "here: drop --speed-check")
    blocks = _blocks(options, scheme)
    return Resolved(
        scheme=scheme,
        calibrate=_calibration_method(options, scheme, samples),
        weight_range=_member(WeightRange, options.weight_range, "weight range"),
        weight_rounding=_rounding(options, scheme, samples, model),
        blocks=blocks,
        excluded=_excluded(tuple(options.exclude), model),
        eight_bit=_eight_bit(tuple(options.eight_bit_weights), model, blocks),
        budget=_budget(options, scheme, samples, model, blocks),
        metric=options.metric,
        bias_correction=options.bias_correction and static and with_samples and not gives_weight_grids(model),
        equalization=options.equalization and static and with_samples and not gives_grids(model),
        speed_check=speed_check and static and with_samples and target.runs_here,
        target=target,
        effort=effort,
        threads=options.threads,
        show_progress=options.show_progress,
    )

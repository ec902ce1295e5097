"""quantize(): load -> prepare -> plan -> calibrate -> rewrite -> (save). The CLI and tests call this."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.calibrate import collect_ranges
from eightbit.config import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION,
    DEFAULT_SCHEME,
    DEFAULT_THREADS,
    DEFAULT_WEIGHT_RANGE,
    WEIGHT_RANGES,
    Scheme,
    SchemeKind,
    scheme_named,
)
from eightbit.datasets import (
    ImagePreprocessing,
    Samples,
    input_specs,
    load_image_folder,
    load_npz,
    samples_from_arrays,
)
from eightbit.errors import InputError
from eightbit.ir import load_model, save_model
from eightbit.isa import cpu_features
from eightbit.passes import (
    FoldAffineIntoConv,
    FoldBatchNorm,
    FoldConstants,
    FuseHardSwish,
    RemoveIdentity,
    SumToAdd,
)
from eightbit.passes.fuse_activation import FuseActivations
from eightbit.passes.insert_qdq import InsertQDQ, activation_qparams
from eightbit.passes.quantize_weights import QuantizeWeights
from eightbit.plan import FloatNode, make_plan

FLOAT_NODES_KEY = "eightbit.float_nodes"
SCHEME_KEY = "eightbit.scheme"
WEIGHT_RANGE_KEY = "eightbit.weight_range"

ModelLike = ir.Model | str | os.PathLike
DataLike = Samples | dict[str, np.ndarray] | str | os.PathLike


def prepare(model: ir.Model) -> ir.Model:
    """The float-to-float rewrites every scheme starts from (DESIGN: fold first, then quantize)."""
    passes = ir.passes.Sequential(
        FoldConstants(),
        RemoveIdentity(),
        SumToAdd(),
        FoldBatchNorm(),
        FoldAffineIntoConv(),
        FuseHardSwish(),
        common_passes.RemoveUnusedNodesPass(),
        common_passes.TopologicalSortPass(),
    )
    passes(model)
    return model


def load_samples(data: DataLike, model: ir.Model, images: ImagePreprocessing | None = None) -> Samples:
    """Calibration or evaluation samples for `model` from an .npz, an image folder, or arrays."""
    specs = input_specs(model)
    if isinstance(data, Samples):
        return data
    if isinstance(data, dict):
        return samples_from_arrays(data, specs)
    path = Path(data)
    if path.is_dir():
        if images is None:
            raise InputError(
                f"{path}: an image folder needs --size H W (and --mean, --std, --layout as the model wants)"
            )
        return load_image_folder(path, specs, images)
    if images is not None:
        raise InputError(f"{path}: --size/--mean/--std/--layout apply to an image folder, not to a file")
    return load_npz(path, specs)


def _as_model(model: ModelLike) -> ir.Model:
    return model if isinstance(model, ir.Model) else load_model(model)


def resolve_weight_range(scheme: Scheme, weight_range: str) -> tuple[Scheme, str]:
    """The scheme with its weight codes limited as asked, and a sentence saying why.

    Integer kernels on x86 without VNNI add pairs of u8 x s8 products in int16 and saturate;
    7-bit weights keep every pair sum exact there (docs/quantization.md, section 4).
    """
    if weight_range not in WEIGHT_RANGES:
        raise InputError(f"unknown weight range {weight_range!r}; choose one of: {', '.join(WEIGHT_RANGES)}")
    if scheme.kind is not SchemeKind.STATIC or scheme.weights.value_bits is not None:
        return scheme, "full"
    if weight_range == "auto":
        cpu = cpu_features()
        if cpu.u8s8_can_saturate:
            weight_range = "7bit"
            why = (f"7-bit weights: this CPU ({cpu.summary()}) has no VNNI, so u8 x s8 products would "
                   f"saturate in int16; pass --weight-range full for a model meant only for VNNI CPUs")
        else:
            weight_range = "full"
            why = (f"full 8-bit weights: this CPU ({cpu.summary()}) multiplies u8 x s8 without saturation; "
                   f"x86 CPUs without VNNI would saturate on this model (--weight-range 7bit avoids it)")
    else:
        why = f"{weight_range} weights, as asked"
    if weight_range == "7bit":
        scheme = dataclasses.replace(scheme, weights=dataclasses.replace(scheme.weights, value_bits=7))
    return scheme, why


def _static(model: ir.Model, scheme: Scheme, samples: Samples, method: str, threads: int,
            show_progress: bool) -> list[FloatNode]:
    # Calibration runs the graph as it computes before activations are fused away.
    unfused = ir.from_proto(ir.to_proto(model))
    FuseActivations()(model)
    plan = make_plan(model.graph)
    ranges = collect_ranges(unfused, [v.name for v in plan.observed], samples, method, threads, show_progress)
    InsertQDQ(plan, activation_qparams(plan, ranges, scheme), scheme)(model)
    common_passes.TopologicalSortPass()(model)
    return plan.float_nodes


def quantize(
    model: ModelLike,
    calibration: DataLike | None = None,
    *,
    scheme: str | Scheme = DEFAULT_SCHEME,
    calibrate: str = DEFAULT_CALIBRATION,
    weight_range: str = DEFAULT_WEIGHT_RANGE,
    images: ImagePreprocessing | None = None,
    output: str | os.PathLike | None = None,
    threads: int = DEFAULT_THREADS,
    show_progress: bool = False,
) -> ir.Model:
    """Quantize a float ONNX model; returns the quantized onnx_ir model (and saves it to `output`).

    The result has the same input and output names, shapes and float types as the original.
    Nodes left in float and the reason for each are stored in the model's metadata.
    """
    scheme = scheme if isinstance(scheme, Scheme) else scheme_named(scheme)
    scheme, weight_note = resolve_weight_range(scheme, weight_range)
    if calibrate not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method {calibrate!r}; choose one of: {', '.join(CALIBRATION_METHODS)}")
    if output is not None and not isinstance(model, ir.Model) and _same_file(model, output):
        raise InputError(f"{output}: the output would overwrite the input model; choose another -o")
    model = _as_model(model)
    samples = load_samples(calibration, model, images) if calibration is not None else None
    if scheme.needs_calibration and samples is None:
        raise InputError(
            f"scheme {scheme.name!r} needs calibration data: pass --calibration samples.npz "
            f"(or use --scheme weights, which needs none)"
        )
    prepare(model)
    if scheme.kind is SchemeKind.STATIC:
        float_nodes = _static(model, scheme, samples, calibrate, threads, show_progress)
    else:
        QuantizeWeights(scheme)(model)
        float_nodes = []
    model.metadata_props[SCHEME_KEY] = scheme.name
    model.metadata_props[WEIGHT_RANGE_KEY] = weight_note
    model.metadata_props[FLOAT_NODES_KEY] = json.dumps([dataclasses.asdict(f) for f in float_nodes])
    model.producer_name = "eightbit"
    if output is not None:
        save_model(model, output)
    return model


def float_nodes_of(model: ir.Model) -> list[FloatNode]:
    """The nodes a quantized model computes in float, as recorded when it was made."""
    raw = model.metadata_props.get(FLOAT_NODES_KEY)
    return [FloatNode(**entry) for entry in json.loads(raw)] if raw else []


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()

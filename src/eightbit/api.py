"""quantize(): options -> load -> prepare -> resolve -> the scheme's steps -> record -> save. The CLI and tests
call this; the steps are in eightbit.pipeline."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import check_loads
from eightbit.backends.openvino import openvino_available
from eightbit.calibrate.memo import RangeMemo
from eightbit.calibrate.per_tensor import PerTensorCalibration
from eightbit.config import DEFAULT_SCHEME, DEFAULT_THREADS, SCHEMES, Scheme, SchemeKind, scheme_named
from eightbit.datasets import (
    ImagePreprocessing,
    Samples,
    input_specs,
    load_image_folder,
    load_npz,
    samples_from_arrays,
)
from eightbit.errors import InputError
from eightbit.frontends import converted_file
from eightbit.frontends.pytorch import from_torch, is_torch_model
from eightbit.frontends.tensorflow import FOUND, TensorNames, is_tensorflow_path
from eightbit.ir import as_model, check_output_path, save_model
from eightbit.ir.load import upgraded
from eightbit.measure.context import Measure
from eightbit.metadata import (
    BIAS_KEY,
    DECISIONS_KEY,
    EQUALIZATION_KEY,
    FALLBACK_KEY,
    FINETUNE_KEY,
    FLOAT_NODES_KEY,
    SCHEME_KEY,
    SPEED_CHECK_KEY,
    TARGET_KEY,
    WEIGHT_RANGE_KEY,
)
from eightbit.passes.half_precision import as_float32, with_types
from eightbit.pipeline.job import Decision, Job, taken
from eightbit.pipeline.options import (
    QuantizeOptions,
    Resolved,
    Target,
    WeightRounding,
    check_options,
    opset_for,
    resolve,
)
from eightbit.pipeline.schemes import Outcome, steps
from eightbit.prepare import prepare
from eightbit.record import bias_saturation_of, fallback_of, finetune_of, float_nodes_of, speed_check_of
from eightbit.target_rules import breaches

ModelLike = ir.Model | str | os.PathLike  # or an onnx.ModelProto, a torch.nn.Module, a torch ExportedProgram
DataLike = Samples | dict[str, np.ndarray] | np.ndarray | str | os.PathLike

__all__ = ["BIAS_KEY", "FLOAT_NODES_KEY", "WEIGHT_RANGE_KEY", "InputError", "bias_saturation_of", "fallback_of",
           "finetune", "finetune_of", "float_nodes_of", "load_samples", "onnx_of", "quantize", "speed_check_of"]


def load_samples(data: DataLike, model: ir.Model, images: ImagePreprocessing | None = None) -> Samples:
    """Calibration or evaluation samples for `model` from an .npz, an image folder, arrays by input name, or one
    array (or tensor) for a model of one input."""
    specs = input_specs(model)
    if isinstance(data, Samples):
        return data
    if isinstance(data, dict):
        return samples_from_arrays(data, specs)
    if not isinstance(data, (str, os.PathLike)) and hasattr(data, "__array__"):
        if len(specs) != 1:
            names = ", ".join(spec.name for spec in specs)
            raise InputError(f"one array of samples fits a model of one input; this one has {len(specs)} ({names}): "
                             "give a dict of arrays by input name")
        return samples_from_arrays({specs[0].name: np.asarray(data)}, specs)
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


def quantize(
    model: ModelLike,
    calibration: DataLike | None = None,
    *,
    scheme: str | Scheme = DEFAULT_SCHEME,
    calibrate: str | None = None,
    weight_range: str = "auto",
    bias_bits: int | None = None,
    weight_granularity: str | None = None,
    weight_rounding: str | None = None,
    weight_bits: int | None = None,
    block_size: int | None = None,
    weight_symmetric: bool | None = None,
    exclude: tuple[str, ...] = (),
    images: ImagePreprocessing | None = None,
    output: str | os.PathLike | None = None,
    threads: int = DEFAULT_THREADS,
    show_progress: bool = False,
    min_sqnr: float | str | None = "auto",
    max_drop: float | None = None,
    metric: Callable[[np.ndarray, np.ndarray], float] | None = None,
    bias_correction: bool = True,
    equalization: bool = True,
    speed_check: bool | None = None,
    target: str = "ort",
    effort: str = "fast",
    example_inputs: object = None,
    graph_inputs: Sequence[str] = (),
    graph_outputs: Sequence[str] = (),
) -> ir.Model:
    """Quantize a float model (an ONNX file's path, an onnx.ModelProto or an onnx_ir.Model, which is left
    unchanged; or a PyTorch model: a torch.nn.Module with `example_inputs`, a torch.export.ExportedProgram, or
    a .pt2 file's path, exported to ONNX first, frontends/pytorch.py); returns the quantized onnx_ir model (and
    saves it to `output`).

    The result has the same input and output names, shapes and float types as the original. Nodes left in
    float and the reason for each are stored in the model's metadata. The options are the command line's
    (QuantizeOptions; `min_sqnr` -> min_sqnr_db, `max_drop` -> max_drop_points), in the same spelling:
    `scheme` (SCHEMES), `calibrate` (CALIBRATION_METHODS; "auto" chooses one per tensor, section 6a),
    `weight_range` ("auto", "full", "7bit"; section 4), `weight_rounding` ("auto", "gptq", "nearest"; section
    2a), `weight_bits`, `block_size` and `weight_symmetric` (the weights scheme's 4- or 8-bit blocks; section
    2b), `exclude` (node names, globs or op types kept float; section 6), `min_sqnr` (dB, "auto": the scheme's
    floor, "off" or None; section 11b) or `max_drop` (points of `metric`, default top-1 agreement with float),
    `bias_correction` (eq. 7b), `equalization` (eq. 35),
    `speed_check` (time the model in the target runtime and keep float the nodes slower in int8, section 11c;
    None: on at `effort` "max" only, as it times), `target` ("ort", "openvino"; section 6b) and `effort`
    ("fast", "max"; section 11d). What each measured choice found is in the metadata (float_nodes_of,
    fallback_of, speed_check_of, WEIGHT_RANGE_KEY). `example_inputs`: a tensor or tuple of tensors of the
    shapes and types a PyTorch module takes, to export it; its ONNX inputs are named after forward()'s arguments,
    and `calibration` may be one array or tensor where there is one input. A TensorFlow model (a frozen .pb, a
    SavedModel folder or a .tflite file's path) is converted by tf2onnx first (frontends/tensorflow.py);
    `graph_inputs` and `graph_outputs` name a frozen graph's inputs and outputs (found where not given).
    """
    options = QuantizeOptions(
        scheme=scheme, calibrate=calibrate, weight_range=weight_range, bias_bits=bias_bits,
        weight_granularity=weight_granularity, weight_rounding=weight_rounding, weight_bits=weight_bits,
        block_size=block_size, weight_symmetric=weight_symmetric, exclude=tuple(exclude), min_sqnr_db=min_sqnr,
        max_drop_points=max_drop, metric=metric, bias_correction=bias_correction, equalization=equalization,
        speed_check=speed_check, target=target, effort=effort, threads=threads, show_progress=show_progress,
    )
    return quantize_with(model, calibration, options, images=images, output=output, example_inputs=example_inputs,
                         names=TensorNames(tuple(graph_inputs), tuple(graph_outputs)))


def onnx_of(model: ModelLike, example_inputs: object = None, names: TensorNames = FOUND) -> ModelLike:
    """A PyTorch model exported to ONNX (frontends/pytorch.py), a TensorFlow model converted to it
    (frontends/tensorflow.py, `names` naming a frozen graph's inputs and outputs); any other model as it is."""
    if is_torch_model(model):
        return from_torch(model, example_inputs)
    if example_inputs is not None:
        raise InputError("example_inputs are for a PyTorch module (they trace it for export); an ONNX model needs "
                         "none")
    if names != FOUND and not is_tensorflow_path(model):
        raise InputError("--inputs and --outputs name the tensors of a frozen TensorFlow graph (.pb); this model "
                         "names its own")
    return converted_file(model, names)


def quantize_with(model: ModelLike, calibration: DataLike | None, options: QuantizeOptions, *,
                  images: ImagePreprocessing | None = None, output: str | os.PathLike | None = None,
                  seconds: dict[str, float] | None = None, example_inputs: object = None,
                  names: TensorNames = FOUND) -> ir.Model:
    """quantize() with its options as one QuantizeOptions; `seconds`, where given, receives the time each stage
    took (load, the steps, save)."""
    seconds = {} if seconds is None else seconds
    check_options(options)
    if output is not None:
        check_output_path(output, *([model] if isinstance(model, (str, os.PathLike)) else []))
    start = time.perf_counter()
    model = onnx_of(model, example_inputs, names)
    source = model
    model = as_model(model)
    if opset_for(options) is not None:
        model = upgraded(model, opset_for(options))
    half_types = as_float32(model)  # a float16 or bfloat16 model is quantized as float32, its I/O kept
    samples = load_samples(calibration, model, images) if calibration is not None else None
    prepare(model)
    resolved = resolve(options, model, samples)
    if resolved.speed_check and resolved.target is Target.OPENVINO and not openvino_available():
        raise InputError("--target openvino times the model in OpenVINO, which is not installed: pip install openvino "
                         "(or pass --no-speed-check)")
    seconds["load and prepare"] = time.perf_counter() - start
    if resolved.calibrate == "auto" and resolved.static:
        quantized = _per_tensor(source, model, samples, resolved, seconds)
    else:
        quantized = _recorded(_outcome(model, samples, resolved, resolved.calibrate, seconds), resolved)
    _check_target_rules(quantized, resolved.target)
    with_types(quantized, half_types)
    if output is not None:
        start = time.perf_counter()
        save_model(quantized, output, check=check_loads)
        seconds["save"] = time.perf_counter() - start
    return quantized


def _outcome(prepared: ir.Model, samples: Samples | None, options: Resolved, method: str | PerTensorCalibration,
             seconds: dict[str, float], measure: Measure | None = None, ranges: RangeMemo | None = None) -> Outcome:
    """The scheme's steps on `prepared`, their times added to `seconds`; `measure` and `ranges`: the float outputs
    and activation ranges of an earlier outcome of the same call, where there is one."""
    if measure is None and samples is not None:
        measure, ranges = Measure(samples, options.threads), RangeMemo(samples)
    job = Job(prepared, options, samples, measure, method, ranges, seconds)
    with job.timed("steps"):
        return steps(job)


def _per_tensor(source: ModelLike, prepared: ir.Model, samples: Samples, options: Resolved,
                seconds: dict[str, float]) -> ir.Model:
    """--calibrate auto: the model built on the methods searched per tensor, measured once more as finished
    (codes, bias correction and all) against the model built on min/max ranges; the first where it agrees better
    with float by MARGIN_DB (docs/quantization.md, section 6a)."""
    method, measure, ranges = PerTensorCalibration(), Measure(samples, options.threads), RangeMemo(samples)
    searched = _outcome(prepared, samples, options, method, seconds, measure, ranges)
    if method.moved():
        plain = as_model(source)
        as_float32(plain)
        prepare(plain)
        minmax = dataclasses.replace(options, calibrate="minmax")
        with_minmax = _outcome(plain, samples, minmax, "minmax", seconds, measure, ranges)
        reference = searched.equalization.reference if searched.equalization is not None else prepared
        method.finished_db = tuple(measure.worst_sqnr_db([with_minmax.build.model, searched.build.model],
                                                                 reference))
        if not taken(method.finished_db[1], method.finished_db[0]):
            method.keep_baseline()
            return _recorded(_with_search(with_minmax, method), minmax)
    return _recorded(_with_search(searched, method) if method.searched else searched, options)


def _with_search(outcome: Outcome, method: PerTensorCalibration) -> Outcome:
    """The outcome with what --calibrate auto's search found and took among its decisions."""
    verdict = "per tensor" if method.moved() else "min/max kept"
    decision = Decision("calibration", f"--calibrate auto: {verdict}", method.summary())
    return dataclasses.replace(outcome, decisions=(*outcome.decisions, decision))


def _check_target_rules(model: ir.Model, target: Target) -> None:
    """A model for TensorRT or an NPU meets its runtime's rules (target_rules.py): where it does not, that is a
    bug here, and nothing is written."""
    found = breaches(model, target.value)
    if found:
        listed = "; ".join(map(str, found[:3])) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise RuntimeError(f"the {target.value} model breaks its runtime's rules: {listed}")


def _recorded(outcome: Outcome, options: Resolved) -> ir.Model:
    """The outcome's model with what was decided in its metadata (metadata.py's keys)."""
    model, decisions = outcome.build.model, list(outcome.decisions)
    equalization = outcome.equalization
    if equalization is not None and equalization.decision is not None:
        decisions.insert(0, equalization.decision)  # the first choice made
    if equalization is not None and equalization.factors:
        model.metadata_props[EQUALIZATION_KEY] = json.dumps({name: f.tolist()
                                                             for name, f in equalization.factors.items()})
    if options.weight_rounding is WeightRounding.GPTQ and outcome.moments:
        count = len(outcome.moments)
        decisions.append(Decision("weight codes", f"chosen from the calibration inputs for {count} nodes",
                                  f"codes of {count} weighted nodes chosen from their calibration inputs "
                                  "(--weight-rounding gptq)"))
    model.metadata_props[SCHEME_KEY] = options.scheme.name
    if options.static:
        model.metadata_props[TARGET_KEY] = options.target.value
    model.metadata_props[WEIGHT_RANGE_KEY] = "; ".join(decision.detail for decision in decisions)
    model.metadata_props[DECISIONS_KEY] = json.dumps([{"step": d.step, "taken": d.taken} for d in decisions])
    model.metadata_props[FLOAT_NODES_KEY] = json.dumps([dataclasses.asdict(f) for f in outcome.build.float_nodes])
    if outcome.fallback is not None:
        model.metadata_props[FALLBACK_KEY] = json.dumps(outcome.fallback.as_dict())
    if outcome.checked is not None:
        model.metadata_props[SPEED_CHECK_KEY] = json.dumps(outcome.checked.as_dict())
    model.producer_name = "eightbit"
    return model


def finetune(
    float_model: str | os.PathLike,
    quantized_model: ModelLike,
    data: DataLike,
    *,
    steps: int | None = None,
    augment: bool = True,
    images: ImagePreprocessing | None = None,
    output: str | os.PathLike | None = None,
    threads: int = DEFAULT_THREADS,
    show_progress: bool = False,
) -> ir.Model:
    """Fit a quantized model's codes and activation scales to its float original's outputs on `data`
    (PyTorch; docs/quantization.md, section 12a). The graph is unchanged: the same nodes run as the
    same integer kernels. Returns the model given where the held-out samples do not measure it better;
    what was done is in the metadata (FINETUNE_KEY)."""
    try:
        from eightbit.qat.finetune import DEFAULT_STEPS, FinetuneOptions
        from eightbit.qat.finetune import finetune as fit
    except ModuleNotFoundError as error:
        if error.name != "torch":
            raise
        raise InputError("fine-tuning trains in PyTorch, which is not installed: pip install torch==2.13.0") from None
    float_path = Path(float_model)
    reference = as_model(float_path)
    quantized = as_model(quantized_model)
    scheme = quantized.metadata_props.get(SCHEME_KEY)
    if scheme not in SCHEMES:
        raise InputError("the quantized model was not made by eightbit quantize (no scheme in its metadata); "
                         "quantize the float model first")
    made_with = scheme_named(scheme)
    if made_with.kind is not SchemeKind.STATIC or made_with.activations.power_of_two:
        raise InputError(f"fine-tuning takes models of the static scheme with free scales (eightbit); this one "
                         f"is {scheme!r}: quantize with --scheme eightbit")
    if [v.name for v in quantized.graph.inputs] != [v.name for v in reference.graph.inputs] or \
            [v.name for v in quantized.graph.outputs] != [v.name for v in reference.graph.outputs]:
        raise InputError("the two models' input and output names differ: give the float model the quantized "
                         "one was made from")
    samples = load_samples(data, reference, images)
    options = FinetuneOptions(steps=DEFAULT_STEPS if steps is None else steps, augment=augment, threads=threads,
                              show_progress=show_progress)
    tuned, report = fit(os.fspath(float_path), ir.to_proto(quantized), samples, options)
    model = ir.from_proto(tuned)
    model.metadata_props[FINETUNE_KEY] = json.dumps(report.as_dict())
    if output is not None:
        save_model(model, output, check=check_loads)
    return model



"""quantize(): load -> prepare -> plan -> calibrate -> rewrite -> (save). The CLI and tests call this."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.backends import OrtSession
from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.backends.openvino import openvino_available
from eightbit.calibrate.means import channel_means, channel_ranges
from eightbit.calibrate.memo import memo_for
from eightbit.calibrate.moments import input_moments, weighted_nodes
from eightbit.calibrate.per_tensor import SEARCH_BATCHES, PerTensorCalibration, search_methods
from eightbit.calibrate.runner import collect_candidate_ranges
from eightbit.config import (
    BIAS_BITS,
    CALIBRATION_METHODS,
    DEFAULT_SCHEME,
    DEFAULT_TARGET,
    DEFAULT_THREADS,
    DEFAULT_WEIGHT_RANGE,
    DEFAULT_WEIGHT_ROUNDING,
    SCHEMES,
    TARGETS,
    WEIGHT_GRANULARITIES,
    WEIGHT_RANGES,
    WEIGHT_ROUNDINGS,
    Granularity,
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
from eightbit.fallback import (
    FROM_THE_INPUT,
    Budget,
    Fallback,
    Harm,
    fallback_from_dict,
    measured_harms,
    searched_prefixes,
)
from eightbit.ir import as_model, check_output_path, save_model
from eightbit.isa import cpu_features
from eightbit.metadata import (
    BIAS_KEY,
    EQUALIZATION_KEY,
    FALLBACK_KEY,
    FINETUNE_KEY,
    FLOAT_NODES_KEY,
    SCHEME_KEY,
    SPEED_CHECK_KEY,
    TARGET_KEY,
    WEIGHT_RANGE_KEY,
)
from eightbit.never_slower import (
    GAIN,
    LEAST_SAVING_MS,
    RUNTIMES,
    SpeedCheck,
    latency_side_by_side,
    run_as_integer,
    slower_in_int8,
)
from eightbit.passes.channel_shuffle import ChannelShuffleAsGather
from eightbit.passes.constants import constant_array
from eightbit.passes.correct_biases import correct_biases
from eightbit.passes.dynamic import MEASURED_CHOICES, DynamicChoices, QuantizeDynamically
from eightbit.passes.equalize_channels import equalize_channels, equalize_weights, find_pairs
from eightbit.passes.fuse_activation import FuseActivations, name_after_activations
from eightbit.passes.hard_gates import HardGatesAsConvolutions
from eightbit.passes.insert_qdq import InsertQDQ, QParams, activation_qparams
from eightbit.passes.quantize_weights import QuantizeWeights
from eightbit.passes.read_qdq import GIVEN_GRID, given_grid, grid_in_format
from eightbit.passes.resize_channels_first import ResizeChannelsFirst
from eightbit.plan import FloatNode, Plan, make_plan
from eightbit.plan.float_outputs import with_float_outputs
from eightbit.prepare import prepare
from eightbit.quant.rounding import InputMoments
from eightbit.report.metrics import Agreement, compared_values, top1_agreement_percent

ModelLike = ir.Model | str | os.PathLike  # or an onnx.ModelProto
DataLike = Samples | dict[str, np.ndarray] | str | os.PathLike
# A calibration method's name, or --calibrate auto's per-tensor choice (one state for every model built).
Calibration = str | PerTensorCalibration


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


# "auto" on a CPU whose fused u8 x s8 kernels can saturate builds both weight ranges and keeps
# the one whose outputs (as this CPU's runtime computes them) are closer to the float model's
# on this many calibration batches.
WEIGHT_RANGE_CHECK_BATCHES = 8


# --min-sqnr is measured on the batches holding this many calibration samples (all of them where there are
# fewer): more than the choices above are on where samples come one to a batch, since it is a figure the model
# is held to, and 8 samples can read 10 dB off 8 others (docs/quantization.md, section 11b).
BUDGET_SAMPLES = 64


def _rows_per_batch(samples: Samples) -> int:
    return 1 if samples.per_sample else samples.batch


def _held_out_from_checks(samples: Samples) -> Samples:
    """The samples after the first WEIGHT_RANGE_CHECK_BATCHES batches, which _float_agreement_db measures on,
    where that leaves at least as many; else all of them. What is fitted on these is judged on others."""
    if samples.number_of_batches() < 2 * WEIGHT_RANGE_CHECK_BATCHES:
        return samples
    return samples.take(WEIGHT_RANGE_CHECK_BATCHES * _rows_per_batch(samples), samples.count)


def _float_agreement_db(models: list[ir.Model], reference: ir.Model, samples: Samples, threads: int,
                        batches: int = WEIGHT_RANGE_CHECK_BATCHES) -> list[float]:
    """Worst SQNR (eq. 14) of each model's outputs (pre-softmax), as ONNX Runtime's fused kernels compute
    them, vs `reference`'s, on the first `batches` calibration batches."""
    def session(model: ir.Model) -> tuple[OrtSession, list[str]]:
        compared = list(compared_values(model).values())
        return session_with_outputs(model, compared, threads), [v.name for v in compared]

    expected_session, expected_names = session(reference)
    sessions = [session(model) for model in models]
    agreement = [[Agreement() for _ in expected_names] for _ in models]
    for index, feeds in enumerate(samples.batches()):
        if index == batches:
            break
        expected = expected_session.run(feeds, expected_names)
        for (quantized, names), per_output in zip(sessions, agreement):
            got = quantized.run(feeds, names)
            for metric, name, expected_name in zip(per_output, names, expected_names):
                metric.add(expected[expected_name], got[name])
    return [min(metric.sqnr_db for metric in per_output) for per_output in agreement]


def _record_bias_saturation(model: ir.Model, scheme: Scheme, saturation: dict[str, tuple[int, int]]) -> None:
    """Metadata eightbit.bias: the bias width and, per node, how many bias values it clipped."""
    clipped = {node: count for node, (count, _) in saturation.items() if count}
    model.metadata_props[BIAS_KEY] = json.dumps({"bits": scheme.bias_bits, "saturated": clipped})


def bias_saturation_of(model: ir.Model) -> dict[str, int]:
    """Node -> number of bias values that did not fit the scheme's bias width."""
    raw = model.metadata_props.get(BIAS_KEY)
    return json.loads(raw)["saturated"] if raw else {}


def _gives_weight_grids(model: ir.Model) -> bool:
    return any(given_grid(value) is not None for value in model.graph.initializers.values())


def _gives_grids(model: ir.Model) -> bool:
    """Whether any tensor of `model` comes with its own grid (a QDQ model): its ranges are not ours to move."""
    return any(given_grid(value) is not None for value in _values(model.graph))


def _carry_given_grids(source: ir.Model, copy: ir.Model) -> None:
    """Value metadata does not survive a proto round trip: copy the given grids over by name."""
    grids = {v.name: given_grid(v) for v in _values(source.graph) if given_grid(v) is not None}
    for value in _values(copy.graph):
        if value.name in grids:
            value.meta[GIVEN_GRID] = grids[value.name]


def _values(graph: ir.Graph):
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from node.outputs


def _static(
    prepared: ir.Model, scheme: Scheme, samples: Samples, method: Calibration, weight_range: str, threads: int,
    show_progress: bool, kept_float: dict[str, str] | None = None, moments: dict[str, np.ndarray] | None = None,
    moment_samples: Samples | None = None, target: str = DEFAULT_TARGET,
) -> tuple[ir.Model, list[FloatNode], str, str]:
    """Fuse activations, plan, calibrate, rewrite; choose the weight range (docs/quantization.md, section 4).

    Returns the model, its float nodes, how the weight range was chosen (in words) and the range
    taken ("full" or "7bit", the form `weight_range` takes).

    Tensors whose grids the model gives (a QDQ model) are not calibrated; the others are, from `samples`.
    Nodes named in `kept_float` stay float, for the reason given there. With `moments` (a dict, filled
    here from `moment_samples`, else the calibration samples, where it lacks a node, and kept for the caller's
    next call), weight codes are chosen by eq. 34 instead of rounded to nearest. A PerTensorCalibration `method`
    (--calibrate auto) is searched on the first model built with it, and the model built again on what it
    finds where that is measured better (section 6a). For the "ort" `target`,
    channel shuffles and nearest Resizes are written in the forms ONNX Runtime runs fast on codes (section 6b).
    """
    if weight_range not in WEIGHT_RANGES:
        raise InputError(f"unknown weight range {weight_range!r}; choose one of: {', '.join(WEIGHT_RANGES)}")
    unfused = ir.to_proto(prepared)  # `prepared` itself stays unfused: calibration and the float reference
    ranges: dict[str, tuple[float, float]] = {}
    # id of a built model -> (the names its activation grids have in it, in activation_qparams' order; scheme)
    contexts: dict[int, tuple[list[str], Scheme]] = {}

    def planned() -> tuple[ir.Model, Plan]:
        """The model in the forms it is quantized in, and its plan: nothing rewritten yet."""
        model = ir.from_proto(unfused)
        _carry_given_grids(prepared, model)
        if not scheme.activations.symmetric:  # eq. 8 needs zero_point = qmin
            FuseActivations(kept_float or ())(model)
        if target == "ort":
            ChannelShuffleAsGather()(model)  # the same function, in a form ONNX Runtime moves fast as codes
            ResizeChannelsFirst()(model)  # the same, in the layout where ONNX Runtime's Resize on codes is fast
        plan = make_plan(model.graph, kept_float)
        return model, (with_float_outputs(plan) if scheme.float_outputs else plan)

    def build(value_bits: int | None) -> tuple[ir.Model, list[FloatNode]]:
        model, plan = planned()
        for value in plan.observed:  # a given grid the scheme cannot hold is the first thing to hear of
            if given_grid(value) is not None:
                grid_in_format(value, given_grid(value), scheme.activations, scheme.name)
        unknown = [v.name for v in plan.observed if given_grid(v) is None]
        if unknown and not ranges:
            if samples is None:
                listed = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
                raise InputError(f"scheme {scheme.name!r} needs calibration data for tensors the model gives no "
                                 f"Q/DQ grid: {listed}; pass --calibration samples.npz (or use --scheme weights, "
                                 "which needs none)")
            # Calibration runs the graph as it computes before activations are fused away.
            if isinstance(method, PerTensorCalibration):
                missing = [name for name in unknown if name not in method.candidates]
                if missing:
                    method.candidates.update(collect_candidate_ranges(prepared, missing, samples, threads,
                                                                      show_progress, scheme.activations))
                ranges.update(method.ranges(unknown))
            else:
                ranges.update(memo_for(samples).ranges(prepared, unknown, method, threads, show_progress,
                                                       scheme.activations))
        chosen = scheme if value_bits is None else scheme.with_weight_bits(value_bits)
        qparams = activation_qparams(plan, ranges, chosen)
        name_after_activations(model.graph)
        if moments is not None and samples is not None:
            int8_names = {node.name for node in plan.int8_nodes}
            wanted = weighted_nodes(prepared.graph, [n for n in prepared.graph if n.name in int8_names])
            missing = [node for node in wanted if node.name not in moments]
            if missing:
                moments.update(input_moments(prepared, missing, moment_samples or samples, threads, show_progress))
        rewrite = InsertQDQ(plan, qparams, chosen, moments)
        rewrite(model)
        common_passes.TopologicalSortPass()(model)
        _record_bias_saturation(model, scheme, rewrite.bias_saturation)
        contexts[id(model)] = ([value.name for value in qparams], chosen)
        return model, plan.float_nodes

    def searched(built: ir.Model, value_bits: int | None) -> tuple[ir.Model, list[FloatNode]] | None:
        """--calibrate auto: the model built again on the methods searched per tensor from `built`
        (calibrate/per_tensor.py), where it is measured better; None where `built` stays."""
        names, chosen = contexts[id(built)]
        _, plan = planned()  # a plan whose readers are not yet rewired: eq. 8a's clamps read them

        def qparams_for(chosen_ranges: dict[str, tuple[float, float]]) -> dict[str, QParams]:
            grids = activation_qparams(plan, {**ranges, **chosen_ranges}, chosen)
            return dict(zip(names, grids.values(), strict=True))

        batches = list(itertools.islice(_held_out_from_checks(samples).batches(), SEARCH_BATCHES))
        search_methods(method, built, prepared, qparams_for, batches, threads, show_progress)
        if not method.moved():
            return None
        ranges.update(method.ranges(ranges))
        rebuilt = build(value_bits)
        method.checked_db = tuple(_float_agreement_db([built, rebuilt[0]], prepared, samples, threads))
        if method.checked_db[1] >= method.checked_db[0] + PER_TENSOR_MARGIN_DB:
            return rebuilt
        method.keep_baseline()
        ranges.update(method.ranges(ranges))
        return None

    model, float_nodes, note, taken = _weights_decided(prepared, scheme, samples, weight_range, threads, build)
    if isinstance(method, PerTensorCalibration) and not method.searched and method.candidates:
        rebuilt = searched(model, 7 if taken == "7bit" else None)
        if rebuilt is not None:
            model, float_nodes = rebuilt
    return model, float_nodes, note, taken


def _weights_decided(
    prepared: ir.Model, scheme: Scheme, samples: Samples | None, weight_range: str, threads: int,
    build: Callable[[int | None], tuple[ir.Model, list[FloatNode]]],
) -> tuple[ir.Model, list[FloatNode], str, str]:
    """The model `build` makes with the weight range `weight_range` names or, for "auto", the one measured
    better on this CPU (docs/quantization.md, section 4); its float nodes, the choice in words and the range."""
    if _gives_weight_grids(prepared):
        model, float_nodes = build(None)
        return model, float_nodes, "weights on the grids the QDQ model gives", "full"
    narrow = scheme.weights.value_bits
    if narrow is not None and narrow <= 7:
        return (*build(None), f"{narrow}-bit weights, as the scheme says", "full")
    if weight_range == "7bit":
        return (*build(7), "7-bit weights, as asked", "7bit")
    if weight_range == "full":
        return (*build(None), "full 8-bit weights, as asked", "full")
    cpu = cpu_features()
    full, float_nodes = build(None)
    if samples is None:
        return full, float_nodes, "full 8-bit weights: no calibration samples to compare 7-bit weights on", "full"
    if not cpu.u8s8_can_saturate:
        why = (f"full 8-bit weights: this CPU ({cpu.summary()}) multiplies u8 x s8 without saturation; x86 CPUs "
               "without VNNI may not (--weight-range 7bit is exact anywhere)")
        return full, float_nodes, why, "full"
    seven, _ = build(7)
    full_db, seven_db = _float_agreement_db([full, seven], prepared, samples, threads)
    measured = (f"worst output SQNR (pre-softmax) vs float on the calibration samples, as this CPU "
                f"({cpu.summary()}, no VNNI) computes them: {full_db:.1f} dB with 8-bit weights, "
                f"{seven_db:.1f} dB with 7-bit")
    if full_db >= seven_db:
        return full, float_nodes, f"full 8-bit weights: {measured}", "full"
    return seven, float_nodes, (f"7-bit weights (exact on any CPU; 8-bit products' pair sums saturate in int16 "
                                f"here): {measured}"), "7bit"


# --calibrate auto's per-tensor methods are taken when the model built on them agrees better with float than
# the one built on min/max ranges, by at least this much on the calibration batches its search did not use.
PER_TENSOR_MARGIN_DB = 0.5


# Hard-swish rewritten as a gate convolution and a Mul (integer kernels in ONNX Runtime) is kept when it costs
# at most this much output SQNR on the calibration samples (docs/quantization.md, section 6b).
GATE_TOLERANCE_DB = 0.5


def _static_with_gates(
    prepared: ir.Model, scheme: Scheme, samples: Samples | None, method: Calibration, weight_range: str, threads: int,
    show_progress: bool, kept_float: dict[str, str] | None = None, moments: dict[str, np.ndarray] | None = None,
    moment_samples: Samples | None = None, target: str = DEFAULT_TARGET,
) -> tuple[ir.Model, list[FloatNode], str, str]:
    """`_static`, with hard-sigmoid gates as convolutions, and hard-swish too where that is measured to cost
    at most GATE_TOLERANCE_DB (docs/quantization.md, section 6b); for the "ort" `target` only (OpenVINO runs
    the gate convolutions slower than the ops)."""
    def static(model: ir.Model) -> tuple[ir.Model, list[FloatNode], str, str]:
        return _static(model, scheme, samples, method, weight_range, threads, show_progress, kept_float, moments,
                       moment_samples, target)

    # The gate's Clip(0, 1) folds only into an asymmetric grid.
    if samples is None or scheme.activations.symmetric or target != "ort":
        return static(prepared)
    HardGatesAsConvolutions(("HardSigmoid",))(prepared)
    swishes = sum(node.op_type == "HardSwish" for node in prepared.graph)
    if not swishes:
        return static(prepared)
    rewritten = ir.from_proto(ir.to_proto(prepared))
    HardGatesAsConvolutions(("HardSwish",))(rewritten)
    gated = static(rewritten)
    plain = static(prepared)
    plain_db, gated_db = _float_agreement_db([plain[0], gated[0]], prepared, samples, threads)
    measured = (f"{swishes} hard-swishes as gate convolutions: {gated_db:.1f} dB output SQNR on the calibration "
                f"samples, as float ops {plain_db:.1f} dB")
    if gated_db >= plain_db - GATE_TOLERANCE_DB:
        return gated[0], gated[1], f"{gated[2]}; {measured}: integer kernels taken", gated[3]
    return plain[0], plain[1], f"{plain[2]}; {measured}: kept float", plain[3]


# --weight-rounding auto takes eq. 34's codes when they raise the worst output SQNR on the calibration
# samples by at least this much over nearest rounding (docs/quantization.md, section 2a).
GPTQ_MARGIN_DB = 0.5


def _static_rounding_measured(
    prepared: ir.Model, scheme: Scheme, samples: Samples, method: Calibration, weight_range: str, threads: int,
    show_progress: bool, nearest: tuple[ir.Model, list[FloatNode], str, str] | None = None,
    target: str = DEFAULT_TARGET,
) -> tuple[ir.Model, list[FloatNode], str, str, dict[str, np.ndarray] | None, str]:
    """`_static_with_gates` with nearest weight codes, and again with codes by eq. 34 (the weight range and the
    hard-swish form decided anew: the two can saturate differently, and the chosen codes can favour the other
    form); the second where it agrees better with float by GPTQ_MARGIN_DB. Returns the model, its float nodes,
    its note, the weight range taken, the moments (None where nearest was kept) and what was measured.
    `nearest`: the model with nearest codes, where the caller has built it already."""
    if nearest is None:
        nearest = _static_with_gates(prepared, scheme, samples, method, weight_range, threads, show_progress,
                                     target=target)
    moments = InputMoments()
    chosen = _static_with_gates(prepared, scheme, samples, method, weight_range, threads, show_progress,
                                moments=moments, moment_samples=_held_out_from_checks(samples), target=target)
    nearest_db, chosen_db = _float_agreement_db([nearest[0], chosen[0]], prepared, samples, threads)
    measured = (f"weight codes chosen from the calibration inputs (--weight-rounding auto): {chosen_db:.1f} dB "
                f"output SQNR on the calibration samples, rounded to nearest {nearest_db:.1f} dB")
    if chosen_db >= nearest_db + GPTQ_MARGIN_DB:
        return (*chosen, moments, f"{measured}: chosen codes taken")
    return (*nearest, None, f"{measured}: nearest kept")


def _kept_float_reason(budget: Budget, harm: Harm, order: str, count: int) -> str:
    """Why a node the budget search keeps float stays float (its FloatNode reason)."""
    head = f"kept float for {budget.flag} {budget.limit:g} {budget.unit}: "
    if order == FROM_THE_INPUT:
        return f"{head}{', '.join(harm.tensors)} among the first {count} tensor grids from the input"
    return f"{head}quantizing {', '.join(harm.tensors)} cost {harm.impact_db:.2f} dB"


def _static_within_budget(
    prepared: ir.Model, scheme: Scheme, samples: Samples, method: Calibration, weight_range: str, threads: int,
    show_progress: bool, budget: Budget, measured: Callable[[ir.Model], float],
    moments: dict[str, np.ndarray] | None = None,
    built: tuple[ir.Model, list[FloatNode], str, str] | None = None, target: str = DEFAULT_TARGET,
) -> tuple[tuple[ir.Model, list[FloatNode], str, str], Fallback]:
    """`_static_with_gates`, with the fewest tensor grids kept float (their producers and readers float nodes)
    for `measured` (a model -> its measure on the calibration samples) to meet `budget`: the most harmful
    first or the first from the input, whichever meets it with fewer (docs/quantization.md, section 11b).
    `built`: the all-quantized model, where the caller has it already (as _static_with_gates returns it)."""
    if built is None:
        built = _static_with_gates(prepared, scheme, samples, method, weight_range, threads, show_progress,
                                   moments=moments, target=target)
    before = measured(built[0])
    if budget.meets(before):
        return built, Fallback(budget, before, before, [], 1)
    batches = list(itertools.islice(samples.batches(), WEIGHT_RANGE_CHECK_BATCHES))
    harms = measured_harms(built[0], prepared, batches, threads, show_progress)
    candidates: dict[tuple[str, int], tuple[ir.Model, list[FloatNode], str, str]] = {}

    def measure(order: str, kept_groups: list[Harm]) -> float:
        kept: dict[str, str] = {}
        for harm in kept_groups:
            reason = _kept_float_reason(budget, harm, order, len(kept_groups))
            kept.update({name: reason for name in harm.nodes if name not in kept})
        # The weight range the all-quantized model took: measured anew on a partly float model, an 8-bit
        # range that saturates where the samples do not show it could win.
        candidates[order, len(kept_groups)] = _static_with_gates(prepared, scheme, samples, method, built[3],
                                                                 threads, False, kept, moments, target=target)
        return measured(candidates[order, len(kept_groups)][0])

    found = searched_prefixes(harms, budget, measure)
    if found is None:
        return built, Fallback(budget, before, before, [], 1)
    order, kept, after, probes = found
    if not budget.meets(after) and budget.standing(before) >= budget.standing(after):
        return built, Fallback(budget, before, before, [], probes + 1)  # no model measured better than all int8
    chosen = candidates[order, len(kept)]
    fallback = Fallback(budget, before, after, kept, probes + 1, order=order)
    latency = latency_side_by_side(built[0], chosen[0], samples.single_feed(), threads, target)
    fallback.latency_ms = (latency.first_ms, latency.second_ms)
    return chosen, fallback


def _never_slower(
    prepared: ir.Model, scheme: Scheme, samples: Samples, method: Calibration, threads: int,
    moments: dict[str, np.ndarray] | None, built: tuple[ir.Model, list[FloatNode], str, str],
    target: str = DEFAULT_TARGET,
) -> tuple[tuple[ir.Model, list[FloatNode], str, str], SpeedCheck]:
    """`built` (as _static_with_gates returns it), or the same model built again with the nodes the `target`
    runtime runs slower in int8 than in float here kept float, where the whole model is measured to run
    faster there (docs/quantization.md, section 11c)."""
    feed = samples.single_feed()
    check = SpeedCheck(slower_in_int8(built[0], prepared, feed, threads, target=target), target=target)
    while True:
        if not check.candidates:
            return built, check
        kept = {node.name: node.reason for node in built[1]}
        for node in check.candidates:
            for name in (node.name, *node.also):
                kept.setdefault(name, f"slower in int8 here: {node.int8_us:.0f} us against {node.float_us:.0f} us "
                                      f"in float ({RUNTIMES[target]} profile)")
        candidate = _static_with_gates(prepared, scheme, samples, method, built[3], threads, False, kept, moments,
                                       target=target)
        # A node left float between two grids is no faster in ONNX Runtime, which fuses it into an integer
        # kernel all the same (with weights it quantizes per tensor itself): such nodes stay integer, as planned.
        fused = [] if target != "ort" else run_as_integer(candidate[0], [node.name for node in check.candidates],
                                                           feed, threads)
        if not fused:
            break
        check.fused_anyway = (*check.fused_anyway, *fused)
    latency = latency_side_by_side(built[0], candidate[0], feed, threads, target)
    check.int8_ms, check.with_float_ms = round(latency.first_ms, 3), round(latency.second_ms, 3)
    check.taken = (latency.second_ms <= latency.first_ms * (1 - GAIN)
                   and latency.first_ms - latency.second_ms >= LEAST_SAVING_MS)
    if not check.taken:
        return built, check
    # The rebuild was handed the range `built` resolved: how that range was chosen is `built`'s to say.
    return (candidate[0], candidate[1], built[2], candidate[3]), check


# Bias correction (eq. 7b) is kept when it raises the worst output SQNR on the calibration samples by at
# least this much.
BIAS_CORRECTION_MARGIN_DB = 0.5


def _with_corrected_biases(
    model: ir.Model, prepared: ir.Model, scheme: Scheme, samples: Samples, threads: int, show_progress: bool,
    budget: Budget | None, measured: Callable[[ir.Model], float] | None, fallback: Fallback | None,
) -> tuple[ir.Model, str]:
    """`model` with its biases corrected by eq. 7b where that raises the worst output SQNR on the calibration
    samples (and keeps a budget `model` met, or brings one it misses no further from it), else `model`; and what
    was measured. The means are taken on other batches than the SQNR where the samples have at least twice
    WEIGHT_RANGE_CHECK_BATCHES. A kept correction updates `fallback`'s figure after."""
    corrected = ir.from_proto(ir.to_proto(model))
    moved = correct_biases(corrected, prepared, _held_out_from_checks(samples), scheme.bias, threads,
                           show_progress=show_progress)
    if not moved:
        return model, "no bias to correct"
    plain_db, corrected_db = _float_agreement_db([model, corrected], prepared, samples, threads)
    keep = corrected_db >= plain_db + BIAS_CORRECTION_MARGIN_DB
    if keep and budget is not None and fallback is not None:
        # Judged by the budget's own measure too: a met budget stays met, one out of reach comes no less close.
        after = measured(corrected)
        keep = budget.meets(after) if fallback.met else budget.standing(after) >= budget.standing(fallback.after)
        if keep:
            fallback.after = after
    text = (f"biases of {len(moved)} layers corrected for their mean output error on the calibration samples "
            f"(eq. 7b): {corrected_db:.1f} dB output SQNR, {plain_db:.1f} dB uncorrected: "
            f"{'correction kept' if keep else 'not kept'}")
    return (corrected if keep else model), text


# Equalized layers (eq. 35) are kept where they raise the worst output SQNR on the calibration samples by
# at least this much (docs/quantization.md, section 5).
EQUALIZATION_MARGIN_DB = 0.5


def _with_equalized_channels(
    prepared: ir.Model, scheme: Scheme, samples: Samples, method: Calibration, weight_range: str, threads: int,
    show_progress: bool, target: str = DEFAULT_TARGET,
) -> tuple[ir.Model, dict[str, np.ndarray], str, tuple[ir.Model, list[FloatNode], str, str] | None]:
    """`prepared` with its layer pairs equalized (eq. 35) where the model built from it, with nearest
    codes, agrees better with float on the calibration samples by EQUALIZATION_MARGIN_DB; else `prepared`.
    Weights on one grid per tensor have their own equalization (eq. 35c) built as well, and the better of
    the two is the one weighed against `prepared`. Returns the model, tensor name -> the factors its channels
    were multiplied by ({} where not kept), what was measured, and the model returned built with nearest
    codes (as _static_with_gates returns it; None where nothing was built). Ranges are read on the samples
    after the ones the choice is measured on, where there are enough."""
    by_weights = scheme.weights.granularity is Granularity.PER_TENSOR
    pairs = find_pairs(prepared.graph, dense=by_weights)
    if not pairs:
        return prepared, {}, "", None
    candidates = []  # (how, equalized model, its factors)
    names = list(dict.fromkeys(pair.measured.name for pair in pairs if not pair.dense))
    if names:  # eq. 35 reads the ranges of the tensors before depthwise convolutions; eq. 35c, weights only
        ranges = channel_ranges(prepared, names, _held_out_from_checks(samples), threads)
        equalized = ir.from_proto(ir.to_proto(prepared))
        candidates.append(("eq. 35", equalized, equalize_channels(equalized.graph, ranges)))
    if by_weights:
        equalized = ir.from_proto(ir.to_proto(prepared))
        candidates.append(("weights, eq. 35c", equalized, equalize_weights(equalized.graph)))
    candidates = [candidate for candidate in candidates if candidate[2]]
    if not candidates:
        return prepared, {}, "", None

    def built(model: ir.Model) -> tuple[ir.Model, list[FloatNode], str, str]:
        return _static_with_gates(ir.from_proto(ir.to_proto(model)), scheme, samples, method, weight_range,
                                  threads, show_progress, target=target)

    plain = built(prepared)
    balanced = [built(equalized) for _, equalized, _ in candidates]
    plain_db, *balanced_db = _float_agreement_db([plain[0], *(b[0] for b in balanced)], prepared, samples, threads)
    best = int(np.argmax(balanced_db))
    how, equalized, factors = candidates[best]
    keep = balanced_db[best] >= plain_db + EQUALIZATION_MARGIN_DB
    pairs_moved = len({pair.producer.name for pair in pairs if pair.between[0].name in factors})
    if len(candidates) == 1:
        text = (f"{pairs_moved} layer pairs equalized ({how}): {balanced_db[0]:.1f} dB output SQNR on the "
                f"calibration samples, {plain_db:.1f} dB as they were: {'equalization kept' if keep else 'not kept'}")
    else:
        measured = ", ".join(f"{db:.1f} dB ({name})" for (name, _, _), db in zip(candidates, balanced_db))
        text = (f"layer pairs equalized: {measured} output SQNR on the calibration samples, {plain_db:.1f} dB as "
                f"they were: {f'equalization kept ({how}, {pairs_moved} pairs)' if keep else 'not kept'}")
    return (equalized, factors, text, balanced[best]) if keep else (prepared, {}, text, plain)


def _metric_drop(reference: ir.Model, samples: Samples, threads: int,
                 metric: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[ir.Model], float]:
    """A model -> how far `metric` falls on every calibration sample: metric(float, float) − metric(model's,
    float), over the first output (the samples' batches stacked)."""
    output = reference.graph.outputs[0].name

    def outputs(model: ir.Model) -> np.ndarray:
        session = OrtSession(model, threads=threads)
        try:
            return np.concatenate([session.run(feeds, [output])[output] for feeds in samples.batches()])
        finally:
            session.close()

    expected = outputs(reference)
    best = float(metric(expected, expected))
    return lambda model: best - float(metric(outputs(model), expected))


def _gives_class_probabilities(model: ir.Model) -> bool:
    """Whether any output of `model` is made by a (Log)Softmax, so that agreement is measured on its input."""
    return any(value.name != name for name, value in compared_values(model).items())


def _min_sqnr_asked(min_sqnr: float | str | None, scheme: Scheme, samples: Samples | None,
                    max_drop: float | None, model: ir.Model) -> float | None:
    """The --min-sqnr limit in dB: as given or, for "auto", the scheme's floor (its floor for class
    probabilities where an output is a softmax's) where it has one, there are calibration samples to measure
    on, no --max-drop and the model brings no grids of its own; else None."""
    if not isinstance(min_sqnr, str):
        return min_sqnr
    if min_sqnr != "auto":
        raise InputError(f"--min-sqnr takes a number of dB, auto or off, not {min_sqnr!r}")
    if scheme.default_min_sqnr_db is None or samples is None or max_drop is not None or _gives_grids(model):
        return None
    if scheme.default_min_sqnr_db_classes is not None and _gives_class_probabilities(model):
        return scheme.default_min_sqnr_db_classes
    return scheme.default_min_sqnr_db


def _budget(min_sqnr: float | None, max_drop: float | None, metric: Callable | None, scheme: Scheme,
            samples: Samples | None, floor: bool = False) -> Budget | None:
    """The budget asked for, checked: one of the two, a static scheme, calibration samples, a finite limit.
    `floor`: `min_sqnr` is the scheme's own."""
    if min_sqnr is None and max_drop is None:
        if metric is not None:
            raise InputError("a metric is what --max-drop measures; give max_drop too")
        return None
    if min_sqnr is not None and max_drop is not None:
        raise InputError("--min-sqnr and --max-drop are two budgets for the same search; give one of them")
    flag, limit = ("--min-sqnr", min_sqnr) if min_sqnr is not None else ("--max-drop", max_drop)
    if scheme.kind is not SchemeKind.STATIC:
        raise InputError(f"{flag} applies to the static schemes (eightbit, po2), not to {scheme.name!r}")
    if samples is None:
        raise InputError(f"{flag} measures the model on calibration samples; pass --calibration samples.npz")
    if not math.isfinite(limit) or (max_drop is not None and max_drop < 0):
        raise InputError(f"{flag} must be a finite number{' of dB' if min_sqnr is not None else ', 0 or more'}, "
                         f"got {limit}")
    if min_sqnr is not None:
        return Budget.min_sqnr(min_sqnr, floor)
    if metric is None:
        return Budget.max_drop(max_drop)
    return Budget.max_drop(max_drop, getattr(metric, "__name__", "the metric").replace("_", " "))


# A dynamic-scheme choice that quantizes more at run time (MEASURED_CHOICES: MatMuls of two run-time
# tensors, Conv inputs) is taken when it costs at most this much output SQNR on the calibration samples.
DYNAMIC_TOLERANCE_DB = 0.5


def _dynamic_weights(scheme: Scheme, weight_range: str) -> tuple[DynamicChoices, str]:
    """How the dynamic scheme stores weight codes on this CPU (docs/quantization.md, section 13)."""
    if weight_range not in WEIGHT_RANGES:
        raise InputError(f"unknown weight range {weight_range!r}; choose one of: {', '.join(WEIGHT_RANGES)}")
    cpu = cpu_features()
    narrow = scheme.weights.value_bits
    if narrow is not None and narrow <= 7:
        return DynamicChoices(scheme.weights, False), f"{narrow}-bit int8 weights, as the scheme says"
    if weight_range == "7bit":
        return (DynamicChoices(scheme.with_weight_bits(7).weights, False),
                "7-bit int8 weights, as asked: u8 x s8 products exact on any CPU")
    if weight_range == "full" or not cpu.u8s8_can_saturate:
        warning = ("" if not cpu.u8s8_can_saturate else
                   "; WARNING: this CPU has no VNNI, its u8 x s8 kernels saturate pair sums at int16, so results "
                   "differ from other CPUs' (--weight-range auto stores offset uint8 codes, exact everywhere)")
        why = "as asked" if weight_range == "full" else (f"this CPU ({cpu.summary()}) multiplies u8 x s8 exactly; "
                                                         "x86 CPUs without VNNI would not (--weight-range 7bit is "
                                                         "exact anywhere)")
        return DynamicChoices(scheme.weights, False), f"8-bit int8 weights, {why}{warning}"
    return (DynamicChoices(scheme.weights, True),
            f"8-bit weights stored as uint8 + 128: this CPU ({cpu.summary()}, no VNNI) would saturate u8 x s8 pair "
            "sums at int16; u8 x u8 products are exact on every CPU")


def _dynamic(
    prepared: ir.Model, scheme: Scheme, samples: Samples | None, weight_range: str, threads: int,
) -> tuple[ir.Model, list[FloatNode], str]:
    """Weights to integers, activations quantized at run time (docs/quantization.md, section 13).

    MatMuls of two run-time tensors and Conv inputs are quantized too where the calibration samples
    show each costs at most DYNAMIC_TOLERANCE_DB; without samples they stay float.
    """
    choices, note = _dynamic_weights(scheme, weight_range)
    source = ir.to_proto(prepared)
    means = None
    if samples is not None:  # bias correction (eq. 32) needs the mean of each weighted layer's input
        axes = {node.inputs[0].name: 1 if node.op_type == "Conv" else -1 for node in prepared.graph
                if node.op_type in ("Conv", "Gemm") and len(node.inputs) > 1
                and constant_array(node.inputs[1]) is not None}
        means = channel_means(prepared, axes, samples, threads)

    def build(chosen: DynamicChoices) -> tuple[ir.Model, QuantizeDynamically]:
        model = ir.from_proto(source)
        rewrite = QuantizeDynamically(chosen, means)
        rewrite(model)
        common_passes.TopologicalSortPass()(model)
        return model, rewrite

    model, rewrite = build(choices)
    if rewrite.corrected:
        note += f"; biases of {len(rewrite.corrected)} layers corrected for the mean error of rounded weights"
    open_choices = {field: count for field, count in rewrite.left_float.items() if count}
    if not open_choices:
        return model, rewrite.float_nodes, note
    if samples is None:
        left = ", ".join(f"{count} {MEASURED_CHOICES[field]}" for field, count in open_choices.items())
        return model, rewrite.float_nodes, (f"{note}; not quantized at run time: {left} (no calibration samples to "
                                            "measure what that costs)")
    variants = [build(dataclasses.replace(choices, **{field: True}))[0] for field in open_choices]
    base_db, *variant_dbs = _float_agreement_db([model, *variants], prepared, samples, threads)
    taken, decisions = {}, []
    for (field, count), db in zip(open_choices.items(), variant_dbs):
        accepted = db >= base_db - DYNAMIC_TOLERANCE_DB
        taken[field] = accepted
        decisions.append(f"{count} {MEASURED_CHOICES[field]} {'quantized' if accepted else 'kept float'} "
                         f"({db:.1f} dB quantized, {base_db:.1f} dB not)")
    if any(taken.values()):
        model, rewrite = build(dataclasses.replace(choices, **taken))
    return model, rewrite.float_nodes, (f"{note}; worst output SQNR (pre-softmax) vs float on the calibration "
                                        f"samples decided: {'; '.join(decisions)}")


def quantize(
    model: ModelLike,
    calibration: DataLike | None = None,
    *,
    scheme: str | Scheme = DEFAULT_SCHEME,
    calibrate: str | None = None,
    weight_range: str = DEFAULT_WEIGHT_RANGE,
    bias_bits: int | None = None,
    weight_granularity: str | None = None,
    weight_rounding: str | None = None,
    images: ImagePreprocessing | None = None,
    output: str | os.PathLike | None = None,
    threads: int = DEFAULT_THREADS,
    show_progress: bool = False,
    min_sqnr: float | str | None = "auto",
    max_drop: float | None = None,
    metric: Callable[[np.ndarray, np.ndarray], float] | None = None,
    bias_correction: bool = True,
    equalization: bool = True,
    speed_check: bool = True,
    target: str = DEFAULT_TARGET,
) -> ir.Model:
    """Quantize a float ONNX model (a path, an onnx.ModelProto or an onnx_ir.Model, which is left
    unchanged); returns the quantized onnx_ir model (and saves it to `output`).

    The result has the same input and output names, shapes and float types as the original.
    Nodes left in float and the reason for each are stored in the model's metadata.
    `calibrate`: how activation ranges are chosen (CALIBRATION_METHODS; default: the scheme's); "auto"
    (static schemes, with calibration samples) chooses one method per tensor by the output error each
    causes, and returns the default's model where that is not measured better (docs/quantization.md,
    section 6a). `min_sqnr` (static schemes): keep the fewest tensors float (the most harmful first or the
    first from the input, whichever needs fewer; docs/quantization.md, section 11b) until the worst output
    SQNR (pre-softmax) on the calibration samples is at least this many dB; what was kept, and what it cost
    in latency, is stored in the metadata (fallback_of). "auto" (the default): the scheme's floor (eightbit:
    25 dB, 30 dB where an output is a softmax's; po2: none) where there are calibration samples and no
    `max_drop`; None: no budget. `max_drop` instead: until
    `metric(outputs, float_outputs)` (higher is better; the first output over every calibration sample,
    stacked; default: top-1 agreement with float, in %) is at most this much below its float value
    metric(float_outputs, float_outputs). `bias_correction` (static schemes with calibration samples):
    move each integer layer's bias by its mean output error on those samples (eq. 7b), kept where the
    output agrees better with float. `weight_rounding` "gptq" (with calibration samples; the default of
    the weights scheme) chooses each layer's weight codes from its calibration inputs (docs/quantization.md,
    section 2a); "nearest" rounds each weight on its own; "auto" (the static schemes' default) builds both
    and keeps the first where it agrees better with float on the calibration samples. `equalization`
    (static schemes with calibration samples): scale the channels feeding each depthwise convolution to
    fill their shared grid (eq. 35, 35b), kept where the output agrees better with float. `speed_check` (static
    schemes with calibration samples): keep float the nodes the target runtime runs slower in int8 than in
    float here, where the model is then measured to run faster (speed_check_of says what was found). `target`
    ("ort" or "openvino"; static schemes): the runtime whose fast forms the graph takes and whose profiles the
    speed check reads (docs/quantization.md, sections 6b and 11c).
    """
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    if target == "openvino" and speed_check and calibration is not None and not openvino_available():
        raise InputError("--target openvino times the model in OpenVINO, which is not installed: pip install openvino "
                         "(or pass --no-speed-check)")
    scheme = scheme if isinstance(scheme, Scheme) else scheme_named(scheme)
    if bias_bits is not None:
        if bias_bits not in BIAS_BITS:
            raise InputError(f"bias width {bias_bits} is not offered; choose one of: {', '.join(map(str, BIAS_BITS))}")
        scheme = dataclasses.replace(scheme, bias_bits=bias_bits)
    if weight_granularity is not None:
        if weight_granularity not in WEIGHT_GRANULARITIES:
            raise InputError(f"unknown weight granularity {weight_granularity!r}; choose one of: "
                             f"{', '.join(WEIGHT_GRANULARITIES)}")
        weights = dataclasses.replace(scheme.weights, granularity=Granularity(weight_granularity))
        scheme = dataclasses.replace(scheme, weights=weights)
    if weight_rounding is not None and weight_rounding not in WEIGHT_ROUNDINGS:
        raise InputError(f"unknown weight rounding {weight_rounding!r}; choose one of: {', '.join(WEIGHT_ROUNDINGS)}")
    if weight_rounding == "gptq" and (calibration is None or scheme.kind is SchemeKind.DYNAMIC):
        raise InputError("--weight-rounding gptq chooses codes from calibration inputs: it needs --calibration and "
                         "the eightbit, po2 or weights scheme")
    weight_rounding = weight_rounding or DEFAULT_WEIGHT_ROUNDING[scheme.kind is SchemeKind.WEIGHTS_ONLY]
    if weight_rounding == "auto" and (calibration is None or scheme.kind is SchemeKind.DYNAMIC):
        weight_rounding = "nearest"  # nothing to choose codes from, or no stored activation grids
    calibrate = calibrate or scheme.default_calibration
    if calibrate not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method {calibrate!r}; choose one of: {', '.join(CALIBRATION_METHODS)}")
    if calibrate == "auto" and scheme.kind is SchemeKind.STATIC:
        if calibration is None:
            raise InputError("--calibrate auto measures each tensor's methods on calibration samples: pass "
                             "--calibration samples.npz")
        calibrate = PerTensorCalibration()
    if output is not None:
        check_output_path(output, *([model] if isinstance(model, (str, os.PathLike)) else []))
    source, asked_rounding = model, weight_rounding  # as given: --calibrate auto builds the min/max model too
    model = as_model(model)
    samples = load_samples(calibration, model, images) if calibration is not None else None
    prepare(model)
    asked_min_sqnr = min_sqnr
    min_sqnr = _min_sqnr_asked(min_sqnr, scheme, samples, max_drop, model)
    budget = _budget(min_sqnr, max_drop, metric, scheme, samples, floor=asked_min_sqnr == "auto")
    fallback = None
    checked = None
    given_weights = _gives_weight_grids(model)
    if given_weights:
        weight_rounding = "nearest"  # the model's own weight codes are kept
    if weight_rounding == "auto" and scheme.kind is SchemeKind.WEIGHTS_ONLY:
        weight_rounding = "gptq"  # measured: eq. 34 gains on every model whose activations stay float
    # Node name -> second moments of its inputs: filled once, read by every model built below.
    moments = InputMoments() if weight_rounding == "gptq" and samples is not None else None
    prepared = model
    equalized: dict[str, np.ndarray] = {}
    equalization_note = ""
    nearest = None  # the static model with nearest codes, where equalization has built it already
    if scheme.kind is SchemeKind.STATIC and equalization and samples is not None and not _gives_grids(prepared):
        # --calibrate auto's ranges hold for one float model, and equalization changes the tensors under their
        # names: it is decided on min/max ranges, and the search runs on the model it leaves.
        searching = isinstance(calibrate, PerTensorCalibration)
        prepared, equalized, equalization_note, nearest = _with_equalized_channels(
            prepared, scheme, samples, "minmax" if searching else calibrate, weight_range, threads, show_progress,
            target)
        model = prepared
        if searching:
            nearest = None
    if budget is None:
        measured = None
    elif max_drop is not None:
        measured = _metric_drop(prepared, samples, threads, metric or top1_agreement_percent)
    else:
        budget_batches = math.ceil(BUDGET_SAMPLES / _rows_per_batch(samples))

        def measured(candidate: ir.Model) -> float:
            return _float_agreement_db([candidate], prepared, samples, threads, batches=budget_batches)[0]
    rounding = ""
    if scheme.kind is SchemeKind.STATIC and weight_rounding == "auto":
        *chosen, moments, rounding = _static_rounding_measured(
            prepared, scheme, samples, calibrate, weight_range, threads, show_progress, nearest, target)
        built = tuple(chosen)
        if budget is not None:  # the search starts from the model just chosen (its rounding and weight range)
            built, fallback = _static_within_budget(
                prepared, scheme, samples, calibrate, built[3], threads, show_progress, budget, measured, moments,
                built, target)
    elif scheme.kind is SchemeKind.STATIC and budget is not None:
        built, fallback = _static_within_budget(
            prepared, scheme, samples, calibrate, weight_range, threads, show_progress, budget, measured, moments,
            nearest if moments is None else None, target)
    elif scheme.kind is SchemeKind.STATIC:
        built = nearest if nearest is not None and moments is None else _static_with_gates(
            model, scheme, samples, calibrate, weight_range, threads, show_progress, moments=moments, target=target)
    if scheme.kind is SchemeKind.STATIC:
        if speed_check and samples is not None:
            built, checked = _never_slower(prepared, scheme, samples, calibrate, threads, moments, built, target)
        model, float_nodes, weight_note, _ = built
        weight_note = f"{weight_note}; {rounding}" if rounding else weight_note
    elif scheme.kind is SchemeKind.DYNAMIC:
        model, float_nodes, weight_note = _dynamic(model, scheme, samples, weight_range, threads)
    else:
        if moments is not None:
            moments.update(input_moments(model, weighted_nodes(model.graph, list(model.graph)), samples, threads,
                                         show_progress))
        QuantizeWeights(scheme, moments)(model)
        float_nodes, weight_note = [], "weights only: arithmetic stays float"
    if scheme.kind is SchemeKind.STATIC and bias_correction and samples is not None and not given_weights:
        model, corrected = _with_corrected_biases(model, prepared, scheme, samples, threads, show_progress, budget,
                                                  measured, fallback)
        weight_note = f"{weight_note}; {corrected}"
    if isinstance(calibrate, PerTensorCalibration) and calibrate.moved():
        # Measured once more as finished (codes, bias correction and all), against the default's model.
        with_minmax = quantize(
            source, samples, scheme=scheme, calibrate="minmax", weight_range=weight_range,
            weight_rounding=asked_rounding, threads=threads, show_progress=show_progress, min_sqnr=asked_min_sqnr,
            max_drop=max_drop, metric=metric, bias_correction=bias_correction, equalization=equalization,
            speed_check=speed_check, target=target)
        calibrate.finished_db = tuple(_float_agreement_db([with_minmax, model], prepared, samples, threads))
        if calibrate.finished_db[1] < calibrate.finished_db[0] + PER_TENSOR_MARGIN_DB:
            calibrate.keep_baseline()
            with_minmax.metadata_props[WEIGHT_RANGE_KEY] += f"; {calibrate.summary()}"
            if output is not None:
                save_model(with_minmax, output)
            return with_minmax
    if isinstance(calibrate, PerTensorCalibration) and calibrate.searched:
        weight_note = f"{weight_note}; {calibrate.summary()}"
    if equalization_note:
        weight_note = f"{weight_note}; {equalization_note}"
    if equalized:
        model.metadata_props[EQUALIZATION_KEY] = json.dumps({name: f.tolist() for name, f in equalized.items()})
    if weight_rounding == "gptq" and moments:  # (auto's note already says what it took)
        weight_note += (f"; codes of {len(moments)} weighted nodes chosen from their calibration inputs "
                        "(--weight-rounding gptq)")
    model.metadata_props[SCHEME_KEY] = scheme.name
    if scheme.kind is SchemeKind.STATIC:
        model.metadata_props[TARGET_KEY] = target
    model.metadata_props[WEIGHT_RANGE_KEY] = weight_note
    model.metadata_props[FLOAT_NODES_KEY] = json.dumps([dataclasses.asdict(f) for f in float_nodes])
    if fallback is not None:
        model.metadata_props[FALLBACK_KEY] = json.dumps(fallback.as_dict())
    if checked is not None:
        model.metadata_props[SPEED_CHECK_KEY] = json.dumps(checked.as_dict())
    model.producer_name = "eightbit"
    if output is not None:
        save_model(model, output)
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
        save_model(model, output)
    return model


def finetune_of(model: ir.Model) -> dict | None:
    """What eightbit finetune did to the model, or None."""
    raw = model.metadata_props.get(FINETUNE_KEY)
    return json.loads(raw) if raw else None


def speed_check_of(model: ir.Model) -> SpeedCheck | None:
    """What the speed check found and decided when the model was made, or None where it did not run."""
    raw = model.metadata_props.get(SPEED_CHECK_KEY)
    return SpeedCheck.from_dict(json.loads(raw)) if raw else None


def fallback_of(model: ir.Model) -> Fallback | None:
    """What --min-sqnr or --max-drop did when the model was made, or None."""
    raw = model.metadata_props.get(FALLBACK_KEY)
    return fallback_from_dict(json.loads(raw)) if raw else None


def float_nodes_of(model: ir.Model) -> list[FloatNode]:
    """The nodes a quantized model computes in float, as recorded when it was made."""
    raw = model.metadata_props.get(FLOAT_NODES_KEY)
    return [FloatNode(**entry) for entry in json.loads(raw)] if raw else []

"""One model of a static scheme built from a float model: fuse activations, plan, calibrate, rewrite; and the
weight range it takes (docs/quantization.md, sections 4 and 6a)."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.calibrate.means import ChannelSums
from eightbit.calibrate.moments import MomentPass, weighted_nodes
from eightbit.calibrate.per_tensor import SEARCH_BATCHES, PerTensorCalibration, search_methods
from eightbit.calibrate.runner import collect_candidate_ranges, run_pass
from eightbit.config import Scheme
from eightbit.datasets import Samples
from eightbit.errors import InputError
from eightbit.ir.graph import graph_values
from eightbit.isa import cpu_features
from eightbit.measure.context import CHECK_BATCHES
from eightbit.metadata import BIAS_KEY
from eightbit.passes.channel_shuffle import ChannelShuffleAsGather
from eightbit.passes.clamps_before_quantize import ClampsBeforeQuantize
from eightbit.passes.float_outputs import FLOAT_OUTPUT_OPS, with_float_outputs
from eightbit.passes.fuse_activation import FuseActivations, name_after_activations
from eightbit.passes.insert_qdq import InsertQDQ, QParams, activation_qparams
from eightbit.passes.read_qdq import GIVEN_GRID, given_grid, grid_in_format
from eightbit.passes.resize_channels_first import ResizeChannelsFirst
from eightbit.pipeline.correct_biases import corrected_outputs
from eightbit.pipeline.job import Build, Decision, Job, taken
from eightbit.pipeline.options import Target, WeightRange, gives_weight_grids
from eightbit.plan import FloatNode, Plan, make_plan, openvino
from eightbit.quant.rounding import InputMoments


def rows_per_batch(samples: Samples) -> int:
    return 1 if samples.per_sample else samples.batch


def _batches_within(part: Samples | None, whole: Samples) -> range:
    """Which batches of `whole` (counted from its first) hold the samples of `part` (all of them where None), a
    part taken from `whole` on its batches' bounds."""
    if part is None:
        return range(whole.number_of_batches())
    first = (part.start - whole.start) // rows_per_batch(whole)
    return range(first, first + part.number_of_batches())


def held_out_from_checks(samples: Samples) -> Samples:
    """The samples after the first CHECK_BATCHES batches, which the choices are measured on, where that leaves
    at least as many; else all of them. What is fitted on these is judged on others."""
    if samples.number_of_batches() < 2 * CHECK_BATCHES:
        return samples
    return samples.take(CHECK_BATCHES * rows_per_batch(samples), samples.count)


def _record_bias_saturation(model: ir.Model, scheme: Scheme, saturation: dict[str, tuple[int, int]]) -> None:
    """Metadata eightbit.bias: the bias width and, per node, how many bias values it clipped."""
    clipped = {node: count for node, (count, _) in saturation.items() if count}
    model.metadata_props[BIAS_KEY] = json.dumps({"bits": scheme.bias_bits, "saturated": clipped})


def _carry_given_grids(source: ir.Model, copy: ir.Model) -> None:
    """Value metadata does not survive a proto round trip: copy the given grids over by name."""
    grids = {v.name: given_grid(v) for v in graph_values(source.graph) if given_grid(v) is not None}
    for value in graph_values(copy.graph):
        if value.name in grids:
            value.meta[GIVEN_GRID] = grids[value.name]


@dataclasses.dataclass
class _Builder:
    """Builds `float_model` with one set of float nodes and moments, as often as asked (7-bit weights, other
    ranges): the float model stays unfused, for calibration and as the reference."""

    job: Job
    float_model: ir.Model
    kept_float: dict[str, str] | None
    moments: InputMoments | None
    moment_samples: Samples | None
    nearest_codes: bool = False  # with `moments`: taken along for a later build, the codes rounded to nearest

    def __post_init__(self) -> None:
        # Nodes --exclude names stay float in every build, beside those a step keeps float.
        self.kept_float = {**self.job.options.excluded, **(self.kept_float or {})}
        self.unfused = ir.to_proto(self.float_model)
        self.ranges: dict[str, tuple[float, float]] = {}
        # id of a built model -> (the names its activation grids have in it, in activation_qparams' order; scheme)
        self.contexts: dict[int, tuple[list[str], Scheme]] = {}

    def planned(self) -> tuple[ir.Model, Plan]:
        """The model in the forms it is quantized in, and its plan: nothing rewritten yet."""
        scheme = self.job.options.scheme
        model = ir.from_proto(self.unfused)
        _carry_given_grids(self.float_model, model)
        target, kept = self.job.options.target, dict(self.kept_float or {})
        if target is Target.OPENVINO:  # grids only where OpenVINO's integer kernels read them (section 6d)
            kept = {**openvino.computed_in_kernel(model.graph), **kept}
            openvino.mark_unsigned_grids(model.graph)
        if not scheme.activations.symmetric or scheme.activations_in_kernel or scheme.nonnegative_activations:
            FuseActivations(kept)(model)  # eq. 8 (a grid from 0), or written back after
        if target is Target.ORT:
            ChannelShuffleAsGather()(model)  # the same function, in a form ONNX Runtime moves fast as codes
            ResizeChannelsFirst()(model)  # the same, in the layout where ONNX Runtime's Resize on codes is fast
        plan = make_plan(model.graph, kept)
        if not scheme.float_outputs:
            return model, plan
        return model, with_float_outputs(plan, openvino.FLOAT_OUTPUT_OPS if target is Target.OPENVINO
                                         else FLOAT_OUTPUT_OPS)

    def _calibrated(self, plan: Plan) -> None:
        """The ranges of the tensors `plan` observes that have no given grid, from the calibration samples."""
        job, scheme = self.job, self.job.options.scheme
        for value in plan.observed:  # a given grid the scheme cannot hold is the first thing to hear of
            if given_grid(value) is not None:
                grid_in_format(value, given_grid(value), scheme.format_of(given_grid(value).zero_point), scheme.name)
        unknown = [v.name for v in plan.observed if given_grid(v) is None]
        if not unknown or self.ranges:
            return
        if job.samples is None:
            listed = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
            raise InputError(f"scheme {scheme.name!r} needs calibration data for tensors the model gives no "
                             f"Q/DQ grid: {listed}; pass --calibration samples.npz (or use --scheme weights, "
                             "which needs none)")
        # Calibration runs the graph as it computes before activations are fused away.
        threads, progress = job.options.threads, job.options.show_progress
        if isinstance(job.method, PerTensorCalibration):
            missing = [name for name in unknown if name not in job.method.candidates]
            if missing:
                job.method.candidates.update(collect_candidate_ranges(self.float_model, missing, job.samples, threads,
                                                                      progress, scheme.activations))
            self.ranges.update(job.method.ranges(unknown))
        else:
            # The pass also keeps the reference's outputs on the batches, which every measured choice compares with,
            # and takes the moments of the nodes whose codes eq. 34 will choose, on the batches they are taken on.
            kept = job.measure.wanted(job.reference) if job.measure is not None and \
                self.float_model is job.reference else None
            missing = self._missing_moments(plan)
            moment_pass = self._moment_pass(missing, _batches_within(self.moment_samples, job.samples)) \
                if missing else None
            consumers = [consumer for consumer in (kept, moment_pass) if consumer is not None]
            self.ranges.update(job.ranges.ranges(self.float_model, unknown, job.method, threads, progress,
                                                 scheme.activations, consumers))
            if kept is not None:
                job.measure.adopt(job.reference, kept)
            if moment_pass is not None and moment_pass.taken:
                self._keep_moments(moment_pass)

    def build(self, value_bits: int | None) -> tuple[ir.Model, list[FloatNode]]:
        job = self.job
        model, plan = self.planned()
        self._calibrated(plan)
        scheme = job.options.scheme
        chosen = scheme if value_bits is None else scheme.with_weight_bits(value_bits)
        qparams = activation_qparams(plan, self.ranges, chosen)
        name_after_activations(model.graph)
        missing = [] if self.nearest_codes else self._missing_moments(plan)
        if missing:
            moment_pass = self._moment_pass(missing)
            run_pass(self.float_model, self.moment_samples or job.samples, [moment_pass], job.options.threads,
                     job.options.show_progress, "input moments")
            self._keep_moments(moment_pass)
        rewrite = InsertQDQ(plan, qparams, chosen, None if self.nearest_codes else self.moments,
                            pairs_after_moves=job.options.target is not Target.OPENVINO)
        rewrite(model)
        if scheme.activations.symmetric and scheme.activations_in_kernel:
            ClampsBeforeQuantize()(model)
        common_passes.TopologicalSortPass()(model)
        _record_bias_saturation(model, scheme, rewrite.bias_saturation)
        self.contexts[id(model)] = ([value.name for value in qparams], chosen)
        return model, plan.float_nodes

    def _missing_moments(self, plan: Plan) -> list[ir.Node]:
        """The nodes of the float model that `plan` makes integer, whose codes eq. 34 chooses, and whose moments
        are not taken yet (none without moments or samples)."""
        if self.moments is None or self.job.samples is None:
            return []
        int8_names = {node.name for node in plan.int8_nodes}
        graph = self.float_model.graph
        wanted = weighted_nodes(graph, [n for n in graph if n.name in int8_names])
        return [node for node in wanted if node.name not in self.moments]

    def _moment_pass(self, nodes: list[ir.Node], batches: range | None = None) -> MomentPass:
        """The sums of `nodes`' moments over the moment samples (of their `batches`, where a pass over every
        calibration sample feeds it); and, the first time, the float means bias correction reads on them."""
        samples = self.moment_samples or self.job.samples
        sums = None if self.moments.mean_rows is not None else ChannelSums(corrected_outputs(self.float_model))
        return MomentPass(nodes, samples.count, sums, batches)

    def _keep_moments(self, moment_pass: MomentPass) -> None:
        samples = self.moment_samples or self.job.samples
        self.moments.update(moment_pass.moments())
        if moment_pass.sums is not None:
            self.moments.means, self.moments.mean_rows = moment_pass.sums.means(), (samples.start, samples.count)

    def searched(self, built: ir.Model, value_bits: int | None) -> tuple[ir.Model, list[FloatNode]] | None:
        """--calibrate auto: the model built again on the methods searched per tensor from `built`
        (calibrate/per_tensor.py), where it is measured better; None where `built` stays."""
        job, method = self.job, self.job.method
        names, chosen = self.contexts[id(built)]
        _, plan = self.planned()  # a plan whose readers are not yet rewired: eq. 8a's clamps read them

        def qparams_for(chosen_ranges: dict[str, tuple[float, float]]) -> dict[str, QParams]:
            grids = activation_qparams(plan, {**self.ranges, **chosen_ranges}, chosen)
            return dict(zip(names, grids.values(), strict=True))

        batches = list(itertools.islice(held_out_from_checks(job.samples).batches(), SEARCH_BATCHES))
        search_methods(method, built, self.float_model, qparams_for, batches, job.options.threads,
                       job.options.show_progress)
        if not method.moved():
            return None
        self.ranges.update(method.ranges(self.ranges))
        rebuilt = self.build(value_bits)
        method.checked_db = tuple(job.measure.worst_sqnr_db([built, rebuilt[0]], self.float_model))
        if taken(method.checked_db[1], method.checked_db[0]):
            return rebuilt
        method.keep_baseline()
        self.ranges.update(method.ranges(self.ranges))
        return None


def build_static(
    job: Job, float_model: ir.Model, weight_range: WeightRange, kept_float: dict[str, str] | None = None,
    moments: InputMoments | None = None, moment_samples: Samples | None = None, nearest_codes: bool = False,
) -> Build:
    """`float_model` quantized by the job's static scheme, with the weight range `weight_range` names or, for
    AUTO, the one measured better on this CPU (docs/quantization.md, section 4).

    Tensors whose grids the model gives (a QDQ model) are not calibrated; the others are, from the job's
    samples. Nodes named in `kept_float` stay float, for the reason given there. With `moments` (filled here
    from `moment_samples`, else the calibration samples, where it lacks a node, and kept for the caller's next
    build), weight codes are chosen by eq. 34 instead of rounded to nearest; with `nearest_codes` too, they are
    rounded to nearest, and the moments taken in the calibration pass, where it runs, for the caller's next
    build (one float pass instead of two). A PerTensorCalibration method
    (--calibrate auto) is searched on the first model built with it, and the model built again on what it finds
    where that is measured better (section 6a). For the ONNX Runtime target, channel shuffles and nearest
    Resizes are written in the forms it runs fast on codes (section 6b).
    """
    builder = _Builder(job, float_model, kept_float, moments, moment_samples, nearest_codes)
    model, float_nodes, decision, range_taken = _weights_decided(job, float_model, weight_range, builder.build)
    method = job.method
    if isinstance(method, PerTensorCalibration) and not method.searched and method.candidates:
        rebuilt = builder.searched(model, 7 if range_taken is WeightRange.SEVEN_BIT else None)
        if rebuilt is not None:
            model, float_nodes = rebuilt
    return Build(model, float_nodes, (decision,), range_taken)


def _range(taken: str, detail: str) -> Decision:
    return Decision("weight range", taken, detail)


def _weights_decided(
    job: Job, float_model: ir.Model, weight_range: WeightRange,
    build: Callable[[int | None], tuple[ir.Model, list[FloatNode]]],
) -> tuple[ir.Model, list[FloatNode], Decision, WeightRange]:
    """The model `build` makes with the weight range asked or, for AUTO, the one measured better on this CPU;
    its float nodes, the decision and the range taken (FULL or SEVEN_BIT)."""
    if gives_weight_grids(float_model):
        given = "weights on the grids the QDQ model gives"
        return (*build(None), _range(given, given), WeightRange.FULL)
    narrow = job.options.scheme.weights.value_bits
    if narrow is not None and narrow <= 7:
        return (*build(None), _range(f"{narrow}-bit, the scheme's", f"{narrow}-bit weights, as the scheme says"),
                WeightRange.FULL)
    if weight_range is WeightRange.SEVEN_BIT:
        return (*build(7), _range("7-bit, as asked", "7-bit weights, as asked"), WeightRange.SEVEN_BIT)
    if weight_range is WeightRange.FULL:
        return (*build(None), _range("8-bit, as asked", "full 8-bit weights, as asked"), WeightRange.FULL)
    cpu = cpu_features()
    full, float_nodes = build(None)
    if not job.options.target.runs_here:
        return (full, float_nodes, _range("8-bit (made for another runtime)", f"full 8-bit weights: the model is "
                                          f"made for {job.options.target.value}, not for this CPU's int8 kernels"),
                WeightRange.FULL)
    if job.samples is None:
        return (full, float_nodes, _range("8-bit", "full 8-bit weights: no calibration samples to compare 7-bit "
                                                   "weights on"), WeightRange.FULL)
    if not cpu.u8s8_can_saturate:
        why = (f"full 8-bit weights: this CPU ({cpu.summary()}) multiplies u8 x s8 without saturation; x86 CPUs "
               "without VNNI may not (--weight-range 7bit is exact anywhere)")
        return full, float_nodes, _range("8-bit (this CPU has VNNI)", why), WeightRange.FULL
    seven, _ = build(7)
    full_db, seven_db = job.measure.worst_sqnr_db([full, seven], float_model)
    measured = (f"worst output SQNR (pre-softmax) vs float on the calibration samples, as this CPU "
                f"({cpu.summary()}, no VNNI) computes them: {full_db:.1f} dB with 8-bit weights, "
                f"{seven_db:.1f} dB with 7-bit")
    figures = f"{full_db:.1f} dB with 8-bit, {seven_db:.1f} dB with 7-bit (no VNNI)"
    if full_db >= seven_db:
        return full, float_nodes, _range(f"8-bit: {figures}", f"full 8-bit weights: {measured}"), WeightRange.FULL
    return seven, float_nodes, _range(f"7-bit: {figures}", f"7-bit weights (exact on any CPU; 8-bit products' "
                                                           f"pair sums saturate in int16 here): {measured}"), \
        WeightRange.SEVEN_BIT


"""The steps each kind of scheme takes, in order, from a prepared float model to a quantized one and the record
of what was decided (docs/quantization.md)."""

from __future__ import annotations

import dataclasses

from eightbit.calibrate.moments import input_moments, weighted_nodes
from eightbit.calibrate.per_tensor import PerTensorCalibration
from eightbit.config import SchemeKind
from eightbit.fallback import Fallback
from eightbit.never_slower import SpeedCheck
from eightbit.passes.block_forms import BlockForm
from eightbit.passes.quantize_weights import QuantizeWeights
from eightbit.pipeline.job import Build, Decision, Job
from eightbit.pipeline.options import WeightRange, WeightRounding
from eightbit.pipeline.steps.bias import with_corrected_biases
from eightbit.pipeline.steps.blocks import weights_in_blocks
from eightbit.pipeline.steps.budget import budget_measure, within_budget
from eightbit.pipeline.steps.dynamic import quantized_dynamically
from eightbit.pipeline.steps.embeddings import embedded
from eightbit.pipeline.steps.equalize import Equalized, equalized
from eightbit.pipeline.steps.gates import with_gates
from eightbit.pipeline.steps.rounding import rounding_measured
from eightbit.pipeline.steps.speed import never_slower
from eightbit.quant.rounding import InputMoments


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A finished model and what its steps decided: the decisions (in the order decided), the equalization
    factors, the budget's search and the speed check (None where they did not run), and the moments its codes
    were chosen from (None where rounded to nearest)."""

    build: Build
    decisions: tuple[Decision, ...]
    equalization: Equalized | None = None
    fallback: Fallback | None = None
    checked: SpeedCheck | None = None
    moments: InputMoments | None = None


def _equalized(job: Job) -> tuple[Job, Equalized | None]:
    """Equalization's step, where the job asks it: --calibrate auto's ranges hold for one float model, and
    equalization changes tensors under their names, so it is decided on min/max ranges and the search runs on
    the model it leaves (and the nearest-code model it measured is not reused)."""
    if not job.options.equalization:
        return job, None
    searching = isinstance(job.method, PerTensorCalibration)
    with job.timed("equalization"):
        found = equalized(dataclasses.replace(job, method="minmax") if searching else job)
    if searching:
        found = dataclasses.replace(found, nearest=None)
    return dataclasses.replace(job, reference=found.reference), found


def static_steps(job: Job) -> Outcome:
    """Equalize, round weights, meet the budget, check the speed, correct biases: each where the job asks; then
    embedding tables to 8-bit codes."""
    job, equalization = _equalized(job)
    options = job.options
    nearest = equalization.nearest if equalization is not None else None
    measured = budget_measure(job) if options.budget is not None else None
    rounding: tuple[Decision, ...] = ()
    with job.timed("weight codes"):
        if options.weight_rounding is WeightRounding.AUTO:
            rounded = rounding_measured(job, nearest)
            built, moments, rounding = rounded.build, rounded.moments, (rounded.decision,)
        else:
            moments = InputMoments() if options.weight_rounding is WeightRounding.GPTQ else None
            built = nearest if nearest is not None and moments is None else with_gates(job, options.weight_range,
                                                                                      moments=moments)
    fallback = checked = None
    if options.budget is not None:
        with job.timed("budget"):
            built, fallback = within_budget(job, built, moments, measured)
    if options.speed_check:
        with job.timed("speed check"):
            built, checked = never_slower(job, built, moments)
    decisions = (*built.decisions, *rounding)
    if options.bias_correction:
        with job.timed("bias correction"):
            built, corrected = with_corrected_biases(job, built, measured, fallback, moments)
        decisions = (*decisions, corrected)
    # Embedding tables last, on the model built: a Gather of a constant table stays float in the plan, and the
    # grid calibrated on its output holds for rows moved by at most half an 8-bit step.
    decisions = (*decisions, *embedded(built.model, options.block_form, job.excluded))
    return Outcome(built, decisions, equalization, fallback, checked, moments)


def weights_steps(job: Job) -> Outcome:
    """Weights to integer codes (eq. 34's where the job rounds by it), per channel or in blocks, arithmetic
    float."""
    if job.options.blocks is not None:
        built = weights_in_blocks(job)
        return Outcome(built, built.decisions)
    model = job.reference
    moments = None
    if job.options.weight_rounding is WeightRounding.GPTQ:
        moments = InputMoments(input_moments(model, weighted_nodes(model.graph, list(model.graph)), job.samples,
                                             job.options.threads, job.options.show_progress))
    decisions = (Decision("scheme", "weights only", "weights only: arithmetic stays float"),
                 *embedded(model, job.options.block_form, job.excluded, only=BlockForm.RUNTIME))
    QuantizeWeights(job.options.scheme, moments, job.excluded)(model)
    return Outcome(Build(model, job.excluded_nodes(model), decisions, WeightRange.FULL), decisions, moments=moments)


def steps(job: Job) -> Outcome:
    """The job's scheme's steps."""
    kind = job.options.scheme.kind
    if kind is SchemeKind.STATIC:
        return static_steps(job)
    if kind is SchemeKind.DYNAMIC:
        built = quantized_dynamically(job)
        return Outcome(built, built.decisions)
    return weights_steps(job)


"""The fewest tensor grids kept float for a model to meet a budget (docs/quantization.md, section 11b)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from eightbit.backends import OrtSession
from eightbit.datasets import Samples
from eightbit.fallback import (
    FROM_THE_INPUT,
    SEARCH_ORDERS,
    Budget,
    Fallback,
    Harm,
    grid_groups,
    measured_harms,
    searched_prefixes,
)
from eightbit.measure.context import CHECK_BATCHES
from eightbit.measure.metrics import top1_agreement_percent
from eightbit.never_slower import latency_side_by_side
from eightbit.pipeline.job import Build, Job
from eightbit.pipeline.options import Effort
from eightbit.pipeline.static import rows_per_batch
from eightbit.pipeline.steps.gates import form_of, with_gates
from eightbit.quant.rounding import InputMoments

# --min-sqnr is measured on the batches holding this many calibration samples (all of them where there are
# fewer): more than the choices are measured on where samples come one to a batch, since it is a figure the
# model is held to, and 8 samples can read 10 dB off 8 others (docs/quantization.md, section 11b).
BUDGET_SAMPLES = 64
# At FAST effort the search stops once the prefix it found is within this share of the shortest that can meet
# the budget: a few more groups kept float, three or four fewer models built where it keeps many.
FAST_SLACK = 0.125


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


def budget_measure(job: Job) -> Callable[[ir.Model], float]:
    """A model -> its measure in the budget's unit on the calibration samples: the drop of the metric for
    --max-drop (top-1 agreement with float unless the caller gave one), else the worst output SQNR
    (pre-softmax) on the batches holding BUDGET_SAMPLES samples."""
    options = job.options
    if options.budget.flag == "--max-drop":
        return _metric_drop(job.reference, job.samples, options.threads, options.metric or top1_agreement_percent)
    batches = math.ceil(BUDGET_SAMPLES / rows_per_batch(job.samples))
    return lambda model: job.worst_sqnr_db([model], batches=batches)[0]


def _kept_float_reason(budget: Budget, harm: Harm, order: str, count: int) -> str:
    """Why a node the budget search keeps float stays float (its FloatNode reason)."""
    head = f"kept float for {budget.flag} {budget.limit:g} {budget.unit}: "
    if order == FROM_THE_INPUT:
        return f"{head}{', '.join(harm.tensors)} among the first {count} tensor grids from the input"
    return f"{head}quantizing {', '.join(harm.tensors)} cost {harm.impact_db:.2f} dB"


def _searched_groups(job: Job, built: Build) -> tuple[list[Harm], tuple[str, ...]]:
    """The grid groups the search keeps float, and the orders it tries: at MAX effort every group's own harm
    measured and both orders; at FAST, the groups from the input, unmeasured."""
    if job.options.effort is Effort.MAX:
        batches = list(itertools.islice(job.samples.batches(), CHECK_BATCHES))
        harms = measured_harms(built.model, job.reference, batches, job.options.threads, job.options.show_progress)
        return harms, SEARCH_ORDERS
    return grid_groups(built.model), (FROM_THE_INPUT,)


def within_budget(job: Job, built: Build, moments: InputMoments | None,
                  measured: Callable[[ir.Model], float]) -> tuple[Build, Fallback]:
    """`built`, or the job's reference built again with the fewest tensor grids kept float (their producers and
    readers float nodes) for `measured` to meet the job's budget: the first from the input or, at MAX effort,
    also the most harmful first, whichever meets it with fewer. Each probe is built with `built`'s weight range
    and, at FAST effort, its hard-swish form. For the scheme's floor at FAST effort the longest prefix is
    measured first, and bisection runs down from it.

    Where no prefix meets it: the scheme's floor returns `built` and says how close the search came; a budget of
    the caller's returns the model measured closest to it (`built` where none measured better)."""
    budget = job.options.budget
    before = measured(built.model)
    if budget.meets(before):
        return built, Fallback(budget, before, before, [], 1)
    harms, orders = _searched_groups(job, built)
    like = form_of(job, built)
    candidates: dict[tuple[str, int], Build] = {}

    def measure(order: str, kept_groups: list[Harm]) -> float:
        kept: dict[str, str] = {}
        for harm in kept_groups:
            reason = _kept_float_reason(budget, harm, order, len(kept_groups))
            kept.update({name: reason for name in harm.nodes if name not in kept})
        # The weight range the all-quantized model took: measured anew on a partly float model, an 8-bit
        # range that saturates where the samples do not show it could win.
        candidates[order, len(kept_groups)] = with_gates(job, built.weight_range, kept, moments, like=like)
        return measured(candidates[order, len(kept_groups)].model)

    fast = job.options.effort is Effort.FAST
    # The floor at FAST effort: where even the most the search keeps float misses it, the all-integer model is
    # returned, so the longest prefix is measured first and one model settles it.
    found = searched_prefixes(harms, budget, measure, orders, slack=FAST_SLACK if fast else 0.0,
                              most_first=fast and budget.floor)
    if found is None:
        return built, Fallback(budget, before, before, [], 1)
    order, kept, after, probes = found
    if not budget.meets(after) and budget.floor:
        return built, Fallback(budget, before, before, [], probes + 1, order=order, closest=after,
                               closest_grids=len(kept))
    if not budget.meets(after) and budget.standing(before) >= budget.standing(after):
        return built, Fallback(budget, before, before, [], probes + 1)  # no model measured better than all int8
    chosen = candidates[order, len(kept)]
    if like is not None:  # how the probe's weights were chosen is the all-integer model's to say
        chosen = Build(chosen.model, chosen.float_nodes, built.decisions, chosen.weight_range, chosen.gates)
    fallback = Fallback(budget, before, after, kept, probes + 1, order=order)
    if job.options.effort is Effort.MAX and job.options.target.runs_here:  # timed: a figure of this run
        latency = latency_side_by_side(built.model, chosen.model, job.samples.single_feed(), job.options.threads,
                                       job.options.target.value)
        fallback.latency_ms = (latency.first_ms, latency.second_ms)
    return chosen, fallback

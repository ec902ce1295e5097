"""The nodes the target runtime runs slower in int8 than in float here, kept float where the whole model is then
timed faster (docs/quantization.md, section 11c). Timed: its verdict follows the machine's load, so it runs only
where asked (--speed-check, or --effort max)."""

from __future__ import annotations

from eightbit.never_slower import (
    GAIN,
    LEAST_SAVING_MS,
    RUNTIMES,
    SpeedCheck,
    latency_side_by_side,
    run_as_integer,
    slower_in_int8,
)
from eightbit.pipeline.job import Build, Job
from eightbit.pipeline.options import Target
from eightbit.pipeline.steps.gates import with_gates
from eightbit.quant.rounding import InputMoments


def never_slower(job: Job, built: Build, moments: InputMoments | None) -> tuple[Build, SpeedCheck]:
    """`built`, or the same model built again with the nodes the target runtime runs slower in int8 than in
    float here kept float, where the whole model is measured to run faster there."""
    feed, threads, target = job.samples.single_feed(), job.options.threads, job.options.target
    check = SpeedCheck(slower_in_int8(built.model, job.reference, feed, threads, target=target.value),
                       target=target.value)
    while True:
        if not check.candidates:
            return built, check
        kept = {node.name: node.reason for node in built.float_nodes}
        for node in check.candidates:
            for name in (node.name, *node.also):
                kept.setdefault(name, f"slower in int8 here: {node.int8_us:.0f} us against {node.float_us:.0f} us "
                                      f"in float ({RUNTIMES[target.value]} profile)")
        candidate = with_gates(job, built.weight_range, kept, moments)
        # A node left float between two grids is no faster in ONNX Runtime, which fuses it into an integer
        # kernel all the same (with weights it quantizes per tensor itself): such nodes stay integer, as planned.
        fused = [] if target is not Target.ORT else run_as_integer(
            candidate.model, [node.name for node in check.candidates], feed, threads)
        if not fused:
            break
        check.fused_anyway = (*check.fused_anyway, *fused)
    latency = latency_side_by_side(built.model, candidate.model, feed, threads, target.value)
    check.int8_ms, check.with_float_ms = round(latency.first_ms, 3), round(latency.second_ms, 3)
    check.taken = (latency.second_ms <= latency.first_ms * (1 - GAIN)
                   and latency.first_ms - latency.second_ms >= LEAST_SAVING_MS)
    if not check.taken:
        return built, check
    # The rebuild was handed the range `built` resolved: how that range was chosen is `built`'s to say.
    return Build(candidate.model, candidate.float_nodes, built.decisions, candidate.weight_range,
                 candidate.gates), check

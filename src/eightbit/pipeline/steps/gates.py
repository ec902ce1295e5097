"""Hard-swish as a gate convolution and a Mul, or as the float op (docs/quantization.md, section 6b)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from eightbit.datasets import Samples
from eightbit.passes.hard_gates import HardGatesAsConvolutions
from eightbit.pipeline.job import Build, Decision, Job, taken
from eightbit.pipeline.options import MARGIN_DB, Effort, Target, WeightRange
from eightbit.pipeline.static import build_static
from eightbit.quant.rounding import InputMoments


def _gated(float_model: ir.Model) -> ir.Model:
    rewritten = ir.from_proto(ir.to_proto(float_model))
    HardGatesAsConvolutions(("HardSwish",))(rewritten)
    return rewritten


def with_gates(
    job: Job, weight_range: WeightRange, kept_float: dict[str, str] | None = None,
    moments: InputMoments | None = None, moment_samples: Samples | None = None, like: Build | None = None,
    nearest_codes: bool = False,
) -> Build:
    """The job's reference built by build_static, with hard-sigmoid gates as convolutions, and hard-swish too
    where that costs at most MARGIN_DB of output SQNR on the calibration samples; or, given `like` (an earlier
    build whose hard-swish form is decided), in `like`'s form, with its decision. For the ONNX Runtime target
    with an asymmetric activation grid only: the gate's Clip(0, 1) folds only into such a grid, and OpenVINO
    runs the gate convolutions slower than the ops. `moments`, `moment_samples`, `nearest_codes`: build_static's."""
    reference, options = job.reference, job.options

    def built(float_model: ir.Model) -> Build:
        return build_static(job, float_model, weight_range, kept_float, moments, moment_samples, nearest_codes)

    if job.samples is None or options.scheme.activations.symmetric or options.target is not Target.ORT:
        return built(reference)
    HardGatesAsConvolutions(("HardSigmoid",))(reference)
    swishes = sum(node.op_type == "HardSwish" for node in reference.graph)
    if not swishes:
        return built(reference)
    if like is not None and like.gates is not None:
        chosen = built(_gated(reference) if like.gates else reference)
        decided = [decision for decision in like.decisions if decision.step == "hard-swish"]
        return dataclasses.replace(chosen, decisions=(*chosen.decisions, *decided), gates=like.gates)
    gated = built(_gated(reference))
    plain = built(reference)
    plain_db, gated_db = job.worst_sqnr_db([plain.model, gated.model])
    measured = (f"{swishes} hard-swishes as gate convolutions: {gated_db:.1f} dB output SQNR on the calibration "
                f"samples, as float ops {plain_db:.1f} dB")
    figures = f"{gated_db:.1f} dB as gates, {plain_db:.1f} dB as float ops"
    if taken(gated_db, plain_db, -MARGIN_DB):
        decision = Decision("hard-swish", f"gate convolutions: {figures}", f"{measured}: integer kernels taken")
        return dataclasses.replace(gated.decided(decision), gates=True)
    decision = Decision("hard-swish", f"float ops: {figures}", f"{measured}: kept float")
    return dataclasses.replace(plain.decided(decision), gates=False)


def form_of(job: Job, build: Build | None) -> Build | None:
    """The build whose hard-swish form later builds take: `build` at FAST effort (the form is measured once, on
    the first model built), None at MAX (each build measures it anew)."""
    return build if job.options.effort is Effort.FAST else None

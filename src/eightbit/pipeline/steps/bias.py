"""Biases corrected for each layer's mean output error (eq. 7b), kept where the output agrees better with
float (docs/quantization.md, section 2)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import onnx_ir as ir

from eightbit.fallback import Fallback
from eightbit.pipeline.correct_biases import correct_biases
from eightbit.pipeline.job import Build, Decision, Job, taken
from eightbit.pipeline.static import held_out_from_checks
from eightbit.quant.rounding import InputMoments

# The means are taken on at most this many samples: the quantized model's run keeps, for every sample, the
# tensors that cross between its pieces (ResNet-50: about 9 MB a sample, PP-OCRv4 det at 320x320: 5 MB), so
# memory stops growing with the samples here. A mean over 32 samples' every position is well estimated.
BIAS_SAMPLES = 32


def with_corrected_biases(job: Job, built: Build, measured: Callable[[ir.Model], float] | None,
                          fallback: Fallback | None, moments: InputMoments | None = None) -> tuple[Build, Decision]:
    """`built` with its biases corrected by eq. 7b, layer by layer, where that raises the worst output SQNR on
    the calibration samples by MARGIN_DB (and keeps a budget `built` met, or brings one it misses no further
    from it, by the budget's `measured`); and the decision. The means are taken on other batches than the SQNR
    where the samples have enough; the float model's are those `moments` took beside them, where they were
    taken on the same samples. A kept correction updates `fallback`'s figure."""
    corrected = ir.from_proto(ir.to_proto(built.model))
    samples = held_out_from_checks(job.samples).take(0, BIAS_SAMPLES)
    known = moments.means if moments is not None and moments.mean_rows == (samples.start, samples.count) else None
    moved = correct_biases(corrected, job.reference, samples, job.options.scheme.bias, job.options.threads,
                           job.options.show_progress, known)
    if not moved:
        return built, Decision("bias correction", "nothing to correct", "no bias to correct")
    plain_db, corrected_db = job.worst_sqnr_db([built.model, corrected])
    keep = taken(corrected_db, plain_db)
    budget = job.options.budget
    if keep and budget is not None and fallback is not None and measured is not None:
        # Judged by the budget's own measure too: a met budget stays met, one out of reach comes no less close.
        after = measured(corrected)
        keep = budget.meets(after) if fallback.met else budget.standing(after) >= budget.standing(fallback.after)
        if keep:
            fallback.after = after
    text = (f"biases of {len(moved)} layers corrected for their mean output error on the calibration samples "
            f"(eq. 7b): {corrected_db:.1f} dB output SQNR, {plain_db:.1f} dB uncorrected: "
            f"{'correction kept' if keep else 'not kept'}")
    verdict = f"{'kept' if keep else 'not kept'}: {corrected_db:.1f} dB corrected, {plain_db:.1f} dB as rounded"
    decision = Decision("bias correction", f"{len(moved)} layers, {verdict}", text)
    return (dataclasses.replace(built, model=corrected) if keep else built), decision

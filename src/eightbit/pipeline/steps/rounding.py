"""Weight codes rounded to nearest, or chosen from the calibration inputs (eq. 34), whichever agrees better with
float (docs/quantization.md, section 2a)."""

from __future__ import annotations

import dataclasses

from eightbit.pipeline.job import Build, Decision, Job, taken
from eightbit.pipeline.static import held_out_from_checks
from eightbit.pipeline.steps.gates import form_of, with_gates
from eightbit.quant.rounding import InputMoments


@dataclasses.dataclass(frozen=True)
class Rounded:
    """The build taken, the moments its codes were chosen from (None where nearest was kept), and the decision
    (kept apart from the build's: it holds whichever later step rebuilds the model)."""

    build: Build
    moments: InputMoments | None
    decision: Decision


def rounding_measured(job: Job, nearest: Build | None = None) -> Rounded:
    """The reference built with nearest weight codes, and again with codes by eq. 34 (the weight range decided
    anew, and at MAX effort the hard-swish form too: the two can saturate differently, and the chosen codes can
    favour the other form); the second where it agrees better with float by MARGIN_DB. `nearest`: the model
    with nearest codes, where an earlier step has built it already. The moments are taken on the samples the
    choice is not measured on, where there are enough."""
    moments, held_out = InputMoments(), held_out_from_checks(job.samples)
    if nearest is None:  # its calibration pass takes the moments too
        nearest = with_gates(job, job.options.weight_range, moments=moments, moment_samples=held_out,
                             nearest_codes=True)
    chosen = with_gates(job, job.options.weight_range, moments=moments, moment_samples=held_out,
                        like=form_of(job, nearest))
    nearest_db, chosen_db = job.worst_sqnr_db([nearest.model, chosen.model])
    measured = (f"weight codes chosen from the calibration inputs (--weight-rounding auto): {chosen_db:.1f} dB "
                f"output SQNR on the calibration samples, rounded to nearest {nearest_db:.1f} dB")
    figures = f"{chosen_db:.1f} dB chosen, {nearest_db:.1f} dB nearest"
    if taken(chosen_db, nearest_db):
        return Rounded(chosen, moments, Decision("weight codes", f"chosen from the calibration inputs (eq. 34): "
                                                                 f"{figures}", f"{measured}: chosen codes taken"))
    return Rounded(nearest, None, Decision("weight codes", f"rounded to nearest: {figures}",
                                           f"{measured}: nearest kept"))

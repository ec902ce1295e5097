"""Layer pairs equalized (eq. 35, 35c), kept where the model built from them agrees better with float
(docs/quantization.md, section 5)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from eightbit.calibrate.means import channel_ranges
from eightbit.config import Granularity
from eightbit.passes.equalize_channels import equalize_channels, equalize_weights, find_pairs
from eightbit.pipeline.job import Build, Decision, Job, taken
from eightbit.pipeline.options import Target
from eightbit.pipeline.static import held_out_from_checks
from eightbit.pipeline.steps.gates import form_of, with_gates


@dataclasses.dataclass(frozen=True)
class Equalized:
    """What equalization left: the float model to build from, tensor name -> the factors its channels were
    multiplied by ({} where not kept), the decision (None where there was nothing to equalize), and the model
    it measured with nearest codes (the one kept; None where nothing was built)."""

    reference: ir.Model
    factors: dict[str, np.ndarray]
    decision: Decision | None
    nearest: Build | None


def _by_weights(job: Job) -> bool:
    return job.options.scheme.weights.granularity is Granularity.PER_TENSOR


def _through_swish(job: Job) -> bool:
    """Whether pairs may have a hard-swish between: not for OpenVINO, which computes a hard-swish inside the
    convolution before it, where the gate form of eq. 35b would cost a depthwise convolution and a product more
    (section 6d)."""
    return job.options.target is not Target.OPENVINO


def _candidates(job: Job, pairs: list) -> list[tuple[str, ir.Model, dict[str, np.ndarray]]]:
    """(how, equalized copy of the reference, its factors) for each equalization that moved something: eq. 35
    where a depthwise convolution reads the pair (its ranges read on the samples the choice is not measured on,
    where there are enough), eq. 35c where weights take one grid per tensor."""
    reference = job.reference
    candidates = []
    names = list(dict.fromkeys(pair.measured.name for pair in pairs if not pair.dense))
    if names:  # eq. 35 reads the ranges of the tensors before depthwise convolutions; eq. 35c, weights only
        ranges = channel_ranges(reference, names, held_out_from_checks(job.samples), job.options.threads)
        equalized = ir.from_proto(ir.to_proto(reference))
        candidates.append(("eq. 35", equalized, equalize_channels(equalized.graph, ranges, _through_swish(job))))
    if _by_weights(job):
        equalized = ir.from_proto(ir.to_proto(reference))
        candidates.append(("weights, eq. 35c", equalized, equalize_weights(equalized.graph, _through_swish(job))))
    return [candidate for candidate in candidates if candidate[2]]


def equalized(job: Job) -> Equalized:
    """The job's reference with its layer pairs equalized where the model built from it, with nearest codes,
    agrees better with float on the calibration samples by MARGIN_DB; else the reference as it is. Weights on one
    grid per tensor have their own equalization (eq. 35c) built as well, and the better of the two is the one
    weighed against the reference."""
    pairs = find_pairs(job.reference.graph, dense=_by_weights(job), through_swish=_through_swish(job))
    candidates = _candidates(job, pairs)
    if not candidates:
        return Equalized(job.reference, {}, None, None)

    def built(model: ir.Model, like: Build | None = None) -> Build:
        copy = dataclasses.replace(job, reference=ir.from_proto(ir.to_proto(model)))
        return with_gates(copy, job.options.weight_range, like=like)

    plain = built(job.reference)
    balanced = [built(model, form_of(job, plain)) for _, model, _ in candidates]
    plain_db, *balanced_db = job.worst_sqnr_db([plain.model, *(b.model for b in balanced)])
    best = int(np.argmax(balanced_db))
    how, model, factors = candidates[best]
    keep = taken(balanced_db[best], plain_db)
    pairs_moved = len({pair.producer.name for pair in pairs if pair.between[0].name in factors})
    if len(candidates) == 1:
        note = (f"{pairs_moved} layer pairs equalized ({how}): {balanced_db[0]:.1f} dB output SQNR on the "
                f"calibration samples, {plain_db:.1f} dB as they were: {'equalization kept' if keep else 'not kept'}")
    else:
        measured = ", ".join(f"{db:.1f} dB ({name})" for (name, _, _), db in zip(candidates, balanced_db))
        note = (f"layer pairs equalized: {measured} output SQNR on the calibration samples, {plain_db:.1f} dB as "
                f"they were: {f'equalization kept ({how}, {pairs_moved} pairs)' if keep else 'not kept'}")
    verdict = (f"kept ({how}, {pairs_moved} pairs)" if keep else "not kept") + \
        f": {balanced_db[best]:.1f} dB equalized, {plain_db:.1f} dB as they were"
    decision = Decision("equalization", verdict, note)
    if keep:
        return Equalized(model, factors, decision, balanced[best])
    return Equalized(job.reference, {}, decision, plain)

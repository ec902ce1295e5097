"""The dynamic scheme: weights to integers offline, activations quantized at run time where measured to cost
little (docs/quantization.md, section 13)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.calibrate.means import channel_means
from eightbit.config import Scheme
from eightbit.ir.graph import constant_array
from eightbit.isa import cpu_features
from eightbit.passes.dynamic import MEASURED_CHOICES, DynamicChoices, QuantizeDynamically
from eightbit.pipeline.job import Build, Decision, Job, taken
from eightbit.pipeline.options import MARGIN_DB, WeightRange
from eightbit.pipeline.steps.embeddings import embedded
from eightbit.plan import FloatNode


def dynamic_weights(scheme: Scheme, weight_range: WeightRange) -> tuple[DynamicChoices, Decision]:
    """How the dynamic scheme stores weight codes on this CPU (docs/quantization.md, section 13)."""
    choices, note = _dynamic_weights(scheme, weight_range)
    bits = choices.weights.value_bits or choices.weights.bits
    codes = f"{bits}-bit codes as uint8 + 128" if choices.offset_codes else f"{bits}-bit codes as int8"
    return choices, Decision("weight range", codes, note)


def _dynamic_weights(scheme: Scheme, weight_range: WeightRange) -> tuple[DynamicChoices, str]:
    """How the dynamic scheme stores weight codes on this CPU, and why, in words."""
    cpu = cpu_features()
    narrow = scheme.weights.value_bits
    if narrow is not None and narrow <= 7:
        return DynamicChoices(scheme.weights, False), f"{narrow}-bit int8 weights, as the scheme says"
    if weight_range is WeightRange.SEVEN_BIT:
        return (DynamicChoices(scheme.with_weight_bits(7).weights, False),
                "7-bit int8 weights, as asked: u8 x s8 products exact on any CPU")
    if weight_range is WeightRange.FULL or not cpu.u8s8_can_saturate:
        warning = ("" if not cpu.u8s8_can_saturate else
                   "; WARNING: this CPU has no VNNI, its u8 x s8 kernels saturate pair sums at int16, so results "
                   "differ from other CPUs' (--weight-range auto stores offset uint8 codes, exact everywhere)")
        why = "as asked" if weight_range is WeightRange.FULL else (
            f"this CPU ({cpu.summary()}) multiplies u8 x s8 exactly; x86 CPUs without VNNI would not "
            "(--weight-range 7bit is exact anywhere)")
        return DynamicChoices(scheme.weights, False), f"8-bit int8 weights, {why}{warning}"
    return (DynamicChoices(scheme.weights, True),
            f"8-bit weights stored as uint8 + 128: this CPU ({cpu.summary()}, no VNNI) would saturate u8 x s8 pair "
            "sums at int16; u8 x u8 products are exact on every CPU")


def _input_means(job: Job) -> dict | None:
    """The mean of each weighted layer's input on the calibration samples, which bias correction (eq. 32) needs."""
    if job.samples is None:
        return None
    prepared = job.reference
    axes = {node.inputs[0].name: 1 if node.op_type == "Conv" else -1 for node in prepared.graph
            if node.op_type in ("Conv", "Gemm") and len(node.inputs) > 1
            and constant_array(node.inputs[1]) is not None}
    return channel_means(prepared, axes, job.samples, job.options.threads)


def quantized_dynamically(job: Job) -> Build:
    """The reference with weights (embedding tables included) to integers and activations quantized at run
    time. MatMuls of two run-time tensors and Conv inputs are quantized too where the calibration samples show
    each costs at most MARGIN_DB; without samples they stay float."""
    choices, weights = dynamic_weights(job.options.scheme, job.options.weight_range)
    tables = ir.from_proto(ir.to_proto(job.reference))
    decisions = [weights, *embedded(tables, job.options.block_form, job.excluded)]
    source = ir.to_proto(tables)
    means = _input_means(job)

    def build(chosen: DynamicChoices) -> tuple[ir.Model, QuantizeDynamically]:
        model = ir.from_proto(source)
        rewrite = QuantizeDynamically(chosen, means, job.options.excluded)
        rewrite(model)
        common_passes.TopologicalSortPass()(model)
        return model, rewrite

    model, rewrite = build(choices)
    if rewrite.corrected:
        decisions.append(Decision("bias correction", f"{len(rewrite.corrected)} layers",
                                  f"biases of {len(rewrite.corrected)} layers corrected for the mean error of rounded "
                                  "weights"))
    open_choices = {field: count for field, count in rewrite.left_float.items() if count}
    if not open_choices:
        return _built(model, rewrite.float_nodes, decisions)
    if job.samples is None:
        left = ", ".join(f"{count} {MEASURED_CHOICES[field]}" for field, count in open_choices.items())
        decisions.append(Decision("run-time quantization", f"not for {left}", f"not quantized at run time: {left} "
                                  "(no calibration samples to measure what that costs)"))
        return _built(model, rewrite.float_nodes, decisions)
    variants = [build(dataclasses.replace(choices, **{field: True}))[0] for field in open_choices]
    base_db, *variant_dbs = job.worst_sqnr_db([model, *variants])
    chosen, measured = {}, []
    for (field, count), db in zip(open_choices.items(), variant_dbs):
        chosen[field] = taken(db, base_db, -MARGIN_DB)
        measured.append(f"{count} {MEASURED_CHOICES[field]} {'quantized' if chosen[field] else 'kept float'} "
                         f"({db:.1f} dB quantized, {base_db:.1f} dB not)")
    if any(chosen.values()):
        model, rewrite = build(dataclasses.replace(choices, **chosen))
    short = ", ".join(f"{MEASURED_CHOICES[field]} {'quantized' if chosen[field] else 'float'}" for field in chosen)
    decisions.append(Decision("run-time quantization", short, "worst output SQNR (pre-softmax) vs float on the "
                              f"calibration samples decided: {'; '.join(measured)}"))
    return _built(model, rewrite.float_nodes, decisions)


def _built(model: ir.Model, float_nodes: list[FloatNode], decisions: list[Decision]) -> Build:
    return Build(model, float_nodes, tuple(decisions), WeightRange.FULL)

"""The weights scheme in blocks (--weight-bits 4, --block-size): MatMul and Gemm weights (Gather tables too, at 8
bits) in blocks, every other weight 8-bit (docs/quantization.md, section 2b)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from eightbit.calibrate.moments import input_moments, weighted_nodes
from eightbit.ir.load import upgraded
from eightbit.passes.activation_scales import ScaleBeforeBlocks, norm_readers
from eightbit.passes.block_forms import ACCURACY_LEVEL, BLOCK_OPSET, BlockForm
from eightbit.passes.block_weights import BlockedNode, BlockedWeight, QuantizeBlockWeights
from eightbit.passes.quantize_weights import QuantizeWeights
from eightbit.pipeline.job import Build, Decision, Job
from eightbit.pipeline.options import MARGIN_DB, WeightRange, WeightRounding
from eightbit.pipeline.static import held_out_from_checks
from eightbit.pipeline.steps.embeddings import embedded


@dataclasses.dataclass(frozen=True)
class _Blocked:
    """One model built in blocks: what the block pass did, and the embedding tables' decision."""

    model: ir.Model
    nodes: tuple[BlockedNode, ...]
    tables: tuple[Decision, ...]


def _forms(form: BlockForm) -> str:
    if form is BlockForm.RUNTIME:
        return (f"MatMulNBits (accuracy level {ACCURACY_LEVEL}: inputs to int8 per block at run time) / "
                "GatherBlockQuantized (ONNX Runtime)")
    return f"DequantizeLinear with block_size (ONNX opset {BLOCK_OPSET})"


def _built(job: Job, model: ir.Model, moments: dict | None, wider: frozenset[str],
           known: dict[tuple[str, int], BlockedWeight]) -> _Blocked:
    """`model` (changed in place) with its weights in the job's blocks, those of `wider` in 8-bit ones, the
    embedding tables 8-bit and every other weight 8-bit per channel."""
    options = job.options
    blocks = QuantizeBlockWeights(options.blocks, options.block_form, moments, job.excluded, wider, known)
    blocks(model)
    tables = embedded(model, options.block_form, job.excluded, only=BlockForm.RUNTIME)
    QuantizeWeights(options.scheme, moments, job.excluded)(model)
    return _Blocked(model, tuple(blocks.blocked), tables)


def _within_budget(job: Job, source: ir.Model, moments: dict, known: dict, first: _Blocked) -> tuple[_Blocked,
                                                                                                      Decision]:
    """Rule (--min-sqnr with 4-bit blocks): where the model's worst output SQNR on the calibration samples is
    below the limit, the fewest weights that reach it take 8-bit blocks, those whose layer output has the lowest
    SQNR over its H first; the shortest such prefix is found by bisection (the SQNR taken as rising with it).
    Where even every weight at 8 bits falls short, that model is taken and the decision says so. `source` is
    the float model, left as it is."""
    budget, fixed = job.options.budget, job.options.eight_bit
    ranked = [node.name for node in sorted((n for n in first.nodes if n.sqnr_db is not None and n.name not in fixed),
                                           key=lambda n: n.sqnr_db)]
    measured: dict[int, tuple[_Blocked, float]] = {0: (first, job.worst_sqnr_db([first.model])[0])}

    def probe(count: int) -> float:
        if count not in measured:
            built = _built(job, ir.from_proto(ir.to_proto(source)), moments, frozenset(ranked[:count]) | fixed, known)
            measured[count] = (built, job.worst_sqnr_db([built.model])[0])
        return measured[count][1]

    if budget.meets(probe(0)):
        low = high = 0
    elif not budget.meets(probe(len(ranked))):
        low = high = len(ranked)
    else:
        low, high = 1, len(ranked)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if budget.meets(probe(middle)) else (middle + 1, high)
    built, db = measured[low]
    met = "meets" if budget.meets(db) else "falls short of"
    taken = f"{low} of {len(ranked)} weights 8-bit: {db:.1f} dB {met} --min-sqnr {budget.limit:g}"
    return built, Decision("weight bits", taken, f"{taken} (worst output SQNR on the calibration samples; with "
                                                 f"every weight 4-bit {measured[0][1]:.1f} dB; the weights whose "
                                                 "layer output SQNR over its inputs is lowest take 8 bits first)")


def _scaled(job: Job, source: ir.Model, moments: dict) -> tuple[ir.Model, tuple[Decision, ...]]:
    """`source`, or where ScaleBeforeBlocks' rule rescales a norm a copy of it so rescaled (`moments` updated),
    and the decision."""
    scaling = ScaleBeforeBlocks(job.options.blocks, moments, MARGIN_DB, job.excluded)
    if not any(norm_readers(node, moments, job.options.blocks, job.excluded) for node in source.graph):
        return source, ()
    source = ir.from_proto(ir.to_proto(source))
    scaling(source)
    if not scaling.scaled:
        return source, ()
    alphas = sorted({norm.alpha for norm in scaling.scaled})
    gain = [norm.after_db - norm.before_db for norm in scaling.scaled]
    count = len(scaling.scaled)
    taken = (f"{count} norm output{'s' if count > 1 else ''} rescaled (alpha {alphas[0]:g}"
             f"{f' to {alphas[-1]:g}' if len(alphas) > 1 else ''})")
    return source, (Decision("activation scales", taken, f"{taken}: their readers' layer error with nearest codes "
                                                          f"{min(gain):+.1f} to {max(gain):+.1f} dB (eq. 39)"),)


def _blocks_decision(job: Job, nodes: tuple[BlockedNode, ...], moments: dict | None) -> Decision:
    block, form = job.options.blocks, job.options.block_form
    chosen = sum(node.chosen for node in nodes)
    kind = "symmetric" if block.symmetric else "a zero point per block"
    codes = (f"; codes chosen from the calibration inputs (eq. 34) for {chosen} of them, rounded to nearest for "
             "the rest (whichever gives the layer's output less error)" if moments is not None else
             "; codes rounded to nearest")
    asked = sum(node.name in job.options.eight_bit for node in nodes)
    wider = f" ({asked} of them 8-bit, as the recipe says)" if asked else ""
    return Decision("weight blocks", f"{len(nodes)} weights in {block.bits}-bit blocks of {block.size}{wider}",
                    f"{len(nodes)} weights as {block.bits}-bit codes in blocks of {block.size} inputs ({kind}){wider}, "
                    f"written as {_forms(form)}{codes}; other weights and embedding tables 8-bit")


def weights_in_blocks(job: Job) -> Build:
    """The reference (upgraded to opset 21 for the standard form) with its MatMul and Gemm weights (Gather
    tables too, at 8 bits) in blocks, codes chosen per node by QuantizeBlockWeights' rule where the job rounds
    by eq. 34 (moments from every calibration sample), after ScaleBeforeBlocks' activation-aware scales (eq. 39),
    the nodes a recipe gives weight_bits = 8 in 8-bit blocks, embedding tables under 4-bit blocks 8-bit
    (QuantizeEmbeddings' rule for ONNX Runtime), and the weights no block form takes (convolutions, narrow or
    batched weights, other tables) 8-bit per channel or row; under a --min-sqnr budget, some weights in 8-bit
    blocks (_within_budget)."""
    options = job.options
    source = upgraded(job.reference, BLOCK_OPSET) if options.block_form is BlockForm.STANDARD else job.reference
    moments = None
    if options.weight_rounding is WeightRounding.GPTQ:
        # Under a budget, H comes from the samples the budget is not measured on, where there are enough.
        samples = held_out_from_checks(job.samples) if options.budget is not None else job.samples
        with job.timed("input moments"):
            moments = input_moments(source, weighted_nodes(source.graph, list(source.graph)), samples,
                                    options.threads, options.show_progress)
    scaled: tuple[Decision, ...] = ()
    if moments is not None:
        with job.timed("activation scales"):
            source, scaled = _scaled(job, source, moments)
    known: dict[tuple[str, int], BlockedWeight] = {}
    searching = options.budget is not None and moments is not None
    with job.timed("weight codes"):
        built = _built(job, ir.from_proto(ir.to_proto(source)) if searching else source, moments, options.eight_bit,
                       known)
    budget = ()
    if searching:
        with job.timed("budget"):
            built, decision = _within_budget(job, source, moments, known, built)
        budget = (decision,)
    decisions = (Decision("scheme", "weights only", "weights only: no activation grids are stored"),
                 _blocks_decision(job, built.nodes, moments), *scaled, *budget, *built.tables)
    return Build(built.model, job.excluded_nodes(built.model), decisions, WeightRange.FULL)

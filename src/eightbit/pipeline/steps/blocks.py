"""The weights scheme in blocks (--weight-bits 4, --block-size): MatMul and Gemm weights (Gather tables too, at 8
bits) in blocks, every other weight 8-bit (docs/quantization.md, section 2b)."""

from __future__ import annotations

from eightbit.calibrate.moments import input_moments, weighted_nodes
from eightbit.ir.load import upgraded
from eightbit.passes.block_forms import ACCURACY_LEVEL, BLOCK_OPSET, BlockForm
from eightbit.passes.block_weights import QuantizeBlockWeights
from eightbit.passes.quantize_weights import QuantizeWeights
from eightbit.pipeline.job import Build, Decision, Job
from eightbit.pipeline.options import WeightRange, WeightRounding
from eightbit.pipeline.steps.embeddings import embedded


def _forms(form: BlockForm) -> str:
    if form is BlockForm.RUNTIME:
        return (f"MatMulNBits (accuracy level {ACCURACY_LEVEL}: inputs to int8 per block at run time) / "
                "GatherBlockQuantized (ONNX Runtime)")
    return f"DequantizeLinear with block_size (ONNX opset {BLOCK_OPSET})"


def weights_in_blocks(job: Job) -> Build:
    """The reference (upgraded to opset 21 for the standard form) with its MatMul and Gemm weights (Gather
    tables too, at 8 bits) in blocks, codes chosen per node by QuantizeBlockWeights' rule where the job rounds
    by eq. 34 (moments from every calibration sample), embedding tables under 4-bit blocks 8-bit
    (QuantizeEmbeddings' rule for ONNX Runtime), and the weights no block form takes (convolutions, narrow or
    batched weights, other tables) 8-bit per channel or row."""
    options = job.options
    block, form = options.blocks, options.block_form
    model = upgraded(job.reference, BLOCK_OPSET) if form is BlockForm.STANDARD else job.reference
    moments = None
    if options.weight_rounding is WeightRounding.GPTQ:
        with job.timed("input moments"):
            moments = input_moments(model, weighted_nodes(model.graph, list(model.graph)), job.samples,
                                    options.threads, options.show_progress)
    blocks = QuantizeBlockWeights(block, form, moments, job.excluded)
    with job.timed("weight codes"):
        blocks(model)
        tables = embedded(model, form, job.excluded, only=BlockForm.RUNTIME)
        QuantizeWeights(options.scheme, moments, job.excluded)(model)
    chosen = sum(node.chosen for node in blocks.blocked)
    kind = "symmetric" if block.symmetric else "a zero point per block"
    codes = (f"; codes chosen from the calibration inputs (eq. 34) for {chosen} of them, rounded to nearest for "
             "the rest (whichever gives the layer's output less error)" if moments is not None else
             "; codes rounded to nearest")
    decisions = (
        Decision("scheme", "weights only", "weights only: no activation grids are stored"),
        Decision("weight blocks", f"{len(blocks.blocked)} weights in {block.bits}-bit blocks of {block.size}",
                 f"{len(blocks.blocked)} weights as {block.bits}-bit codes in blocks of "
                 f"{block.size} inputs ({kind}), written as {_forms(form)}{codes}; other weights and "
                 "embedding tables 8-bit"),
        *tables,
    )
    return Build(model, job.excluded_nodes(model), decisions, WeightRange.FULL)

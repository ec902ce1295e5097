"""The float-to-float rewrites every scheme starts from (DESIGN: fold first, then quantize)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.errors import InputError
from eightbit.ir.graph import constant_array
from eightbit.passes import (
    FoldAffineIntoConv,
    FoldBatchNorm,
    FoldConstants,
    FuseHardSwish,
    RemoveIdentity,
    SumToAdd,
)
from eightbit.passes.fold_input_affine import FoldAffineIntoNextConv
from eightbit.passes.matmul_as_gemm import MatMulBiasAsGemm
from eightbit.passes.mean_as_pool import ReduceMeanAsGlobalPool
from eightbit.passes.read_qdq import ReadQDQ


def _name_unnamed_nodes(model: ir.Model) -> None:
    """Give every node a name (op type and position) so that choices about nodes can name them."""
    taken = {node.name for node in model.graph if node.name}
    for index, node in enumerate(model.graph):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


# The ops whose constant inputs become integer codes in some scheme: their weights must be finite numbers.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather")


def _check_finite_weights(model: ir.Model) -> None:
    """InputError naming the first weight (a constant float input of a WEIGHTED_OPS node, as folding left it)
    that holds NaN or an infinity: no grid holds it, and the float model computes nothing useful with it."""
    for node in model.graph:
        if node.op_type not in WEIGHTED_OPS:
            continue
        for value in node.inputs:
            array = constant_array(value) if value is not None else None
            if array is not None and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise InputError(f"weight {value.name!r} of {node.op_type} node {node.name!r} holds NaN or "
                                 "infinite values; fix the model (or re-export it from a good checkpoint)")


def prepare(model: ir.Model) -> ir.Model:
    """Fold constants, batch norms and affine ops (into the linear op before or after them), remove
    identities, read a QDQ model's grids, write spatial means as pools; refuse a model whose weights are not
    finite."""
    passes = ir.passes.Sequential(
        FoldConstants(),
        RemoveIdentity(),
        ReduceMeanAsGlobalPool(),  # before the grids are read: the pool's output takes the mean's
        ReadQDQ(),  # an already quantized model: its grids are kept, its Q/DQ pairs taken out
        SumToAdd(),
        MatMulBiasAsGemm(),
        FoldAffineIntoConv(),  # a bias written as a separate Add first, so that a batch norm after it folds too
        FoldBatchNorm(),
        FoldAffineIntoConv(),
        FuseHardSwish(),
        FoldAffineIntoNextConv(),  # after the hard-swish spellings are fused: their Mul by 1/6 is no affine op
        common_passes.RemoveUnusedNodesPass(),
        common_passes.TopologicalSortPass(),
    )
    passes(model)
    _name_unnamed_nodes(model)
    _check_finite_weights(model)
    return model

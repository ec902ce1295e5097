"""The float-to-float rewrites every scheme starts from (DESIGN: fold first, then quantize)."""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

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


def prepare(model: ir.Model) -> ir.Model:
    """Fold constants, batch norms and affine ops (into the linear op before or after them), remove
    identities, read a QDQ model's grids."""
    passes = ir.passes.Sequential(
        FoldConstants(),
        RemoveIdentity(),
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
    return model

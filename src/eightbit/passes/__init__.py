"""Graph rewrites, one per module. Each is an onnx_ir pass with its rule in the docstring."""

from eightbit.passes.fold_affine import FoldAffineIntoConv
from eightbit.passes.fold_batchnorm import FoldBatchNorm
from eightbit.passes.fold_constants import FoldConstants
from eightbit.passes.fuse_hardswish import FuseHardSwish
from eightbit.passes.remove_identity import RemoveIdentity
from eightbit.passes.sum_to_add import SumToAdd

__all__ = ["FoldAffineIntoConv", "FoldBatchNorm", "FoldConstants", "FuseHardSwish", "RemoveIdentity", "SumToAdd"]

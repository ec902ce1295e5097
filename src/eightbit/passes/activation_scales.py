"""Activation-aware scales before weights in blocks (docs/quantization.md, eq. 39).

Rule: for each LayerNormalization over the last axis whose constant Scale (and Bias) can carry a per-channel
factor and whose output only MatMuls read, as their first input, against constant 2-D weights of at least one
block of inputs that have moments: the channel scales s = channel_scales(rms, alpha) for the alpha of ALPHAS
that gives those MatMuls the least summed error tr(E H Eᵀ) with nearest codes in `block` (scaled_error) are
folded in where that error is below alpha = 0's (no scaling) by at least `margin_db`: Scale and Bias divided
by s, each MatMul's weight rows multiplied by it. The float model computes the same function. The moments of
the rescaled inputs replace the old ones, for eq. 34's codes after it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from eightbit.ir.graph import attribute, constant_array
from eightbit.passes.output_channels import set_constant
from eightbit.quant.activation_scales import ALPHAS, channel_scales, input_rms, scaled_error, scaled_moments
from eightbit.quant.blocks import BlockFormat
from eightbit.quant.rounding import moments_error


@dataclasses.dataclass(frozen=True)
class ScaledNorm:
    """One norm whose output was rescaled: its name, the alpha taken, and its readers' summed layer SQNR over
    their H before and after (dB)."""

    name: str
    alpha: float
    before_db: float
    after_db: float


def norm_readers(norm: ir.Node, moments: dict[str, np.ndarray], block: BlockFormat,
                 exclude: frozenset[str]) -> list[ir.Node] | None:
    """The MatMuls reading `norm`'s output, if the rule applies to it (module docstring), else None."""
    if norm.op_type != "LayerNormalization" or norm.domain not in ("", "ai.onnx") or attribute(norm, "axis", -1) != -1:
        return None
    output = norm.outputs[0]
    if output.is_graph_output() or any(extra.uses() for extra in norm.outputs[1:]) or not output.uses():
        return None
    scale = constant_array(norm.inputs[1])
    bias = constant_array(norm.inputs[2]) if len(norm.inputs) > 2 and norm.inputs[2] is not None else None
    if scale is None or scale.ndim != 1 or (len(norm.inputs) > 2 and norm.inputs[2] is not None and bias is None):
        return None
    readers = []
    for user, index in output.uses():
        weight = constant_array(user.inputs[1]) if user.op_type == "MatMul" and len(user.inputs) > 1 else None
        if (index != 0 or weight is None or weight.ndim != 2 or weight.dtype != np.float32 or user.name in exclude
                or user.name not in moments or weight.shape[0] != len(scale) or weight.shape[0] < block.size):
            return None
        readers.append(user)
    return readers


class ScaleBeforeBlocks(ir.passes.InPlacePass):
    """The module's rule. `moments` (node name -> H) is updated for the rescaled MatMuls; `scaled` lists the
    norms rescaled, in graph order."""

    def __init__(self, block: BlockFormat, moments: dict[str, np.ndarray], margin_db: float,
                 exclude: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.block = block
        self.margin_db = margin_db
        self.moments = moments
        self.exclude = exclude
        self.scaled: list[ScaledNorm] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        taken: set[str] = set()
        for norm in list(model.graph):
            readers = norm_readers(norm, self.moments, self.block, self.exclude)
            if readers is None:
                continue
            rows = [constant_array(reader.inputs[1]).T for reader in readers]
            h = [self.moments[reader.name] for reader in readers]
            rms = input_rms(h[0], rows[0].shape[1])
            errors = [sum(scaled_error(r, m, channel_scales(rms, alpha), self.block) for r, m in zip(rows, h))
                      for alpha in ALPHAS]
            best = int(np.argmin(errors))
            signal = sum(moments_error(r, np.zeros_like(r), m) for r, m in zip(rows, h))
            before, after = _db(signal, errors[ALPHAS.index(0.0)]), _db(signal, errors[best])
            if after < before + self.margin_db:
                continue
            self._fold(model.graph, norm, readers, channel_scales(rms, ALPHAS[best]), taken)
            self.scaled.append(ScaledNorm(norm.name, ALPHAS[best], before, after))
        return ir.passes.PassResult(model, bool(self.scaled))

    def _fold(self, graph: ir.Graph, norm: ir.Node, readers: list[ir.Node], scales: np.ndarray,
              taken: set[str]) -> None:
        for index in (1, 2):
            if index < len(norm.inputs) and norm.inputs[index] is not None:
                set_constant(graph, norm, index, constant_array(norm.inputs[index]) / scales, taken)
        for reader in readers:
            set_constant(graph, reader, 1, constant_array(reader.inputs[1]) * scales[:, None], taken)
            self.moments[reader.name] = scaled_moments(self.moments[reader.name], scales)


def _db(signal: float, error: float) -> float:
    return float(10 * np.log10(signal / error)) if error > 0 and signal > 0 else float("inf")

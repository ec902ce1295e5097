"""The weights-only scheme in blocks: MatMul, Gemm and Gather weights as 4- or 8-bit codes with a grid per
block of inputs (docs/quantization.md, section 2b)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.ir.graph import attribute, constant_array
from eightbit.passes.block_forms import (
    BLOCK_OPSET,
    MICROSOFT,
    BlockForm,
    BlockWeight,
    gemm_fits_runtime,
    runtime_gather,
    runtime_matmul,
    standard_dequantize,
)
from eightbit.passes.weight_rounding import rounded_codes
from eightbit.plan.ops import weight_axis
from eightbit.quant.blocks import BlockFormat, block_format, block_grid, dequantized, nearest_codes
from eightbit.quant.rounding import moments_error


@dataclasses.dataclass(frozen=True)
class BlockedNode:
    """One node whose weight went in blocks: its name, its op, whether eq. 34 chose its codes, their width, and
    its output's SQNR over its H, 10·log10(tr(W H Wᵀ) / tr(E H Eᵀ)) (None without H)."""

    name: str
    op_type: str
    chosen: bool
    bits: int
    sqnr_db: float | None = None


@dataclasses.dataclass(frozen=True)
class BlockedWeight:
    """The codes one node's weight took, whether eq. 34 chose them, and its output SQNR over H (BlockedNode)."""

    weight: BlockWeight
    chosen: bool
    sqnr_db: float | None


@dataclasses.dataclass(frozen=True)
class _Weight:
    """A node's weight as rows (outputs × inputs; a table's rows for Gather), the node's input it is, and
    the axis its inputs run along in its own layout."""

    index: int
    rows: np.ndarray
    axis: int


def _weight(node: ir.Node, block: BlockFormat) -> _Weight | None:
    """The weight of `node` that goes in `block`s: a MatMul's or Gemm's constant 2-D float32 second input with at
    least `block.size` inputs, or, for 8-bit blocks, the table of a Gather on axis 0 whose rows are whole
    blocks; None for any other node (its weight, if any, stays with the 8-bit rules). A table keeps 8 bits
    under 4-bit blocks: each row enters the network as it is, with no sum over inputs to average its
    rounding errors, and on the token encoder of BENCHMARKS.md 4-bit tables cost 4 dB of output SQNR
    (24.7 against 28.7 dB with 8-bit ones)."""
    size = block.size
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in ("MatMul", "Gemm") and len(node.inputs) > 1 and constant_array(node.inputs[0]) is None:
        array = constant_array(node.inputs[1])
        if array is None or array.dtype != np.float32 or array.ndim != 2:
            return None
        transposed = node.op_type == "Gemm" and bool(attribute(node, "transB", 0))
        weight = _Weight(1, array if transposed else array.T, 1 if transposed else 0)
        return weight if weight.rows.shape[1] >= size else None
    if node.op_type == "Gather" and block.bits == 8 and attribute(node, "axis", 0) == 0:
        array = constant_array(node.inputs[0])
        if array is None or array.dtype != np.float32 or array.ndim != 2 or array.shape[1] % size:
            return None
        return _Weight(0, array, 1)
    return None


class QuantizeBlockWeights(ir.passes.InPlacePass):
    """Rule: the constant weight of MatMul and Gemm and, at 8 bits, the table of Gather (embeddings) become
    codes of `block.fmt` with one grid per `block.size` inputs of each output (each table row), written in
    `form`. A node in `moments` takes the codes eq. 34 chooses on the block grids where they give its output
    less error over those moments than the nearest codes (eq. 5), the nearest codes otherwise. Left as they
    are: a Gemm the runtime form cannot compute (transA, alpha, beta, a C that is not a bias), a weight too
    narrow for one block, in the standard form a weight whose inputs are not whole blocks, and nodes named in
    `exclude`. Nodes named in `wider` take 8-bit symmetric blocks of the same size instead. `known` (node
    name and bits -> codes) keeps codes between builds of one call. `blocked` lists what was done, in graph
    order."""

    def __init__(self, block: BlockFormat, form: BlockForm, moments: dict[str, np.ndarray] | None = None,
                 exclude: frozenset[str] = frozenset(), wider: frozenset[str] = frozenset(),
                 known: dict[tuple[str, int], BlockedWeight] | None = None) -> None:
        super().__init__()
        self.exclude = exclude
        self.wider = wider
        self.known = {} if known is None else known
        self.block = block
        self.form = form
        self.moments = moments or {}
        self.blocked: list[BlockedNode] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.form is BlockForm.STANDARD and model.opset_imports.get("", 0) < BLOCK_OPSET:
            raise ValueError(f"block DequantizeLinear needs opset {BLOCK_OPSET}; upgrade the model first")
        taken: set[str] = set()
        for node in list(model.graph):
            weight = _weight(node, self.block) if node.name not in self.exclude else None
            if weight is None or not self._fits(node, weight):
                continue
            block = block_format(8, self.block.size, True) if node.name in self.wider else self.block
            key = (node.name, block.bits)
            if key not in self.known:
                self.known[key] = self._blocked(node, weight, block)
            found = self.known[key]
            self._write(model.graph, node, weight, found.weight, taken)
            self.blocked.append(BlockedNode(node.name, node.op_type, found.chosen, block.bits, found.sqnr_db))
        if self.blocked and self.form is BlockForm.RUNTIME:
            model.opset_imports.setdefault(MICROSOFT, 1)
        common_passes.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, bool(self.blocked))

    def _fits(self, node: ir.Node, weight: _Weight) -> bool:
        if self.form is BlockForm.STANDARD:  # OpenVINO's DequantizeLinear takes no shorter last block
            return weight.rows.shape[1] % self.block.size == 0
        return node.op_type != "Gemm" or gemm_fits_runtime(node, weight.rows.shape[0])

    def _blocked(self, node: ir.Node, weight: _Weight, block: BlockFormat) -> BlockedWeight:
        """The weight's codes on its block grids, whether eq. 34 chose them (see the class's rule), and the
        layer's output SQNR over its H."""
        fmt = block.fmt
        grid = block_grid(weight.rows, block)
        nearest = BlockWeight(nearest_codes(weight.rows, grid, fmt), grid, block)
        h = self.moments.get(node.name) if weight.index == 1 else None
        if h is None:
            return BlockedWeight(nearest, False, None)
        scale, zero_point = grid.per_input(weight.rows.shape[1])
        codes = rounded_codes(node, constant_array(node.inputs[1]), h, scale, zero_point, fmt)
        if weight_axis(node) == 1:
            codes = codes.T
        chosen = BlockWeight(codes, grid, block)
        errors = [moments_error(weight.rows, dequantized(candidate.codes, grid), h) for candidate in (chosen, nearest)]
        signal = moments_error(weight.rows, np.zeros_like(weight.rows), h)
        best = min(errors)
        sqnr_db = float(10 * np.log10(signal / best)) if best > 0 and signal > 0 else float("inf")
        return BlockedWeight(chosen, True, sqnr_db) if errors[0] < errors[1] else BlockedWeight(nearest, False, sqnr_db)

    def _write(self, graph: ir.Graph, node: ir.Node, weight: _Weight, blocked: BlockWeight, taken: set[str]) -> None:
        if self.form is BlockForm.STANDARD:
            value = node.inputs[weight.index]
            node.replace_input_with(weight.index, standard_dequantize(graph, value, blocked, weight.axis, node, taken))
            return
        if node.op_type == "Gather":
            new = runtime_gather(graph, node, blocked, taken)
        else:
            bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
            new = runtime_matmul(graph, node, blocked, bias, taken)
        ir.convenience.replace_nodes_and_values(graph, node, [node], [new], node.outputs, new.outputs)

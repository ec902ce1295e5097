"""Embedding tables (a Gather's constant float table) as 8-bit codes, in the form the target runtime reads fast
(docs/quantization.md, section 2b)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.config import WEIGHTS_S8_PER_CHANNEL
from eightbit.ir.graph import attribute, constant_array
from eightbit.passes.block_forms import MICROSOFT, BlockForm, BlockWeight, runtime_gather
from eightbit.passes.qdq_nodes import dequantized_constant
from eightbit.quant.blocks import BLOCK_SIZES, block_format, block_grid, nearest_codes

# Tables smaller than this stay float: their codes and scales would save less than the nodes cost.
_MIN_ELEMENTS = 1024


def table_block(columns: int) -> int | None:
    """The block for a table of rows of `columns`: the largest of BLOCK_SIZES that divides it (one grid per row
    where the row has at most 256 entries), None where none does."""
    fitting = [size for size in BLOCK_SIZES if columns % size == 0]
    return fitting[-1] if fitting else None


def _table(node: ir.Node) -> np.ndarray | None:
    if node.domain not in ("", "ai.onnx") or node.op_type != "Gather" or attribute(node, "axis", 0) != 0:
        return None
    table = constant_array(node.inputs[0])
    if table is None or table.dtype != np.float32 or table.ndim != 2 or table.size < _MIN_ELEMENTS:
        return None
    return table


class QuantizeEmbeddings(ir.passes.InPlacePass):
    """Rule: the constant 2-D float table of a Gather on axis 0 becomes symmetric 8-bit codes, nearest
    (eq. 5). RUNTIME form: GatherBlockQuantized, one grid per table_block() entries of a row, so that only the
    rows gathered are dequantized (a DequantizeLinear before the Gather dequantizes the whole table at every
    run); a table whose rows no block size divides takes the STANDARD form: codes per row + DequantizeLinear
    (opset 13) before the Gather. Nodes named in `exclude` are left as they are. `count` is the number of
    tables rewritten."""

    def __init__(self, form: BlockForm, exclude: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.form = form
        self.exclude = exclude
        self.count = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        taken: set[str] = set()
        for node in list(graph):
            table = _table(node) if node.name not in self.exclude else None
            if table is None:
                continue
            size = table_block(table.shape[1])
            if self.form is BlockForm.RUNTIME and size is not None:
                block = block_format(8, size, symmetric=True)
                grid = block_grid(table, block)
                weight = BlockWeight(nearest_codes(table, grid, block.fmt), grid, block)
                new = runtime_gather(graph, node, weight, taken)
                ir.convenience.replace_nodes_and_values(graph, node, [node], [new], node.outputs, new.outputs)
                model.opset_imports.setdefault(MICROSOFT, 1)
            else:
                value, _ = dequantized_constant(graph, node.inputs[0], table, WEIGHTS_S8_PER_CHANNEL, 0, node, taken)
                node.replace_input_with(0, value)
            self.count += 1
        if self.count:
            common_passes.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, bool(self.count))

"""Embedding tables to 8-bit codes in the target's fast form, in every scheme that stores weights as integers
(docs/quantization.md, section 2b)."""

from __future__ import annotations

import onnx_ir as ir

from eightbit.passes.block_forms import BlockForm
from eightbit.passes.embeddings import QuantizeEmbeddings
from eightbit.pipeline.job import Decision


def embedded(model: ir.Model, form: BlockForm, exclude: frozenset[str], only: BlockForm | None = None,
             ) -> tuple[Decision, ...]:
    """`model`'s embedding tables, but those of nodes in `exclude`, rewritten in `form` (in place; nothing where
    `only` is given and is not `form`: the scheme's own weight rule then takes them), and the decision, where
    there were any."""
    if only is not None and form is not only:
        return ()
    rewrite = QuantizeEmbeddings(form, exclude)
    rewrite(model)
    if not rewrite.count:
        return ()
    written = "GatherBlockQuantized: rows dequantized as gathered" if form is BlockForm.RUNTIME else \
        "per-row codes + DequantizeLinear"
    tables = f"{rewrite.count} table{'s' if rewrite.count != 1 else ''}"
    return (Decision("embeddings", f"{tables} 8-bit", f"{tables} of embeddings as 8-bit codes ({written})"),)

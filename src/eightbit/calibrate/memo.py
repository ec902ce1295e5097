"""Activation ranges collected once per float model and sample set, for every build that asks again."""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence

import onnx_ir as ir

from eightbit.calibrate.runner import collect_ranges
from eightbit.config import IntegerFormat
from eightbit.datasets import Samples
from eightbit.measure.context import PassConsumer


def _fingerprint(model: ir.Model) -> bytes:
    """What tells float models apart: their nodes (serialized one by one), inputs, outputs and the bytes of
    their weights; never the model as one message, which protobuf cannot hold above 2 GiB."""
    digest = hashlib.sha256()
    graph = model.graph
    digest.update(repr([(v.name, str(v.dtype), str(v.shape)) for v in (*graph.inputs, *graph.outputs)]).encode())
    for node in graph:
        digest.update(ir.serde.serialize_node(node).SerializeToString(deterministic=True))
    for name, value in graph.initializers.items():
        tensor = value.const_value
        digest.update(repr((name, str(value.dtype), str(value.shape))).encode())
        if tensor is not None:
            digest.update(tensor.tobytes())
    return digest.digest()


_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


def _float_values(model: ir.Model) -> list[str]:
    """The names of the float tensors `model` computes from its inputs (the inputs included)."""
    values = [*model.graph.inputs, *(value for node in model.graph for value in node.outputs)]
    return [value.name for value in values if value.dtype in _FLOATS]


class RangeMemo:
    """The ranges collected on one sample set, by the float model, method and format they were collected
    for, then by tensor name.

    A tensor's range depends on those alone: not on which nodes a build keeps float, how it rounds its
    weights or which weight range it takes. The builds of one quantize call (nearest and chosen weight codes,
    hard-swish as ops and as gates, every probe of the budget's search and of the speed check) quantize the
    same few float models, so the samples need to run through each of them once. A rewrite that changes
    what a tensor holds (equalization) makes another model, with ranges of its own. The sample set is held
    weakly: a memo outlives its quantize call only as a few numbers.
    """

    def __init__(self, samples: Samples) -> None:
        self._samples = weakref.ref(samples)
        self._known: dict[tuple[bytes, str, IntegerFormat | None], dict[str, tuple[float, float]]] = {}
        self.runs = 0  # passes over the samples made so far

    def holds(self, samples: Samples) -> bool:
        return self._samples() is samples

    def ranges(self, model: ir.Model, names: list[str], method: str, threads: int, show_progress: bool,
               fmt: IntegerFormat | None, consumers: Sequence[PassConsumer] = ()) -> dict[str, tuple[float, float]]:
        """collect_ranges(model, names, <the sample set>, method, threads, show_progress, fmt, consumers), running
        the samples through `model` only where some name is not known already: for those names the first time,
        for every float tensor of the model the second (`consumers` are fed only where the samples run)."""
        samples = self._samples()
        if samples is None:
            raise RuntimeError("the memo's sample set is gone")
        known = self._known.setdefault((_fingerprint(model), method, fmt), {})
        missing = [name for name in names if name not in known]
        if missing and known:
            # A later build of this model observes tensors the first did not (an activation does not fuse
            # into a node kept float, so the tensor between them gets a grid of its own): more builds will,
            # so every float tensor is collected in this one pass.
            missing += [name for name in _float_values(model) if name not in known and name not in missing]
        if missing:
            known.update(collect_ranges(model, missing, samples, method, threads, show_progress, fmt, consumers))
            self.runs += 1
        return {name: known[name] for name in names}

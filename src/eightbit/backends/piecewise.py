"""A model run over a set of samples one piece at a time, the tensors that cross from one piece to the next
kept in memory, so that a step can change what a node it has reached put out before the nodes after it run.

Bias correction (eq. 7b) needs each layer's mean output with every layer before it already corrected. Run
whole, that is one run of the model over the samples for each layer (ResNet-50: 54). Run in pieces that end
at each such layer, every node runs once; a correction is then applied to the kept output itself (a bias
moves its node's output by a constant per channel), and the pieces after it start from there.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir

from eightbit.backends.onnxruntime import OrtSession
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples


def _names_read(node: onnx.NodeProto) -> Iterator[str]:
    """The names `node` reads: its inputs and, inside its subgraphs, every input named there (those that the
    subgraph makes itself are not kept anywhere, so asking for them too does no harm)."""
    yield from (name for name in node.input if name)
    for attribute in node.attribute:
        for graph in [attribute.g, *attribute.graphs] if attribute.type in (
                onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) else []:
            for inner in graph.node:
                yield from _names_read(inner)


class PiecewiseRun:
    """`model` run over `samples`, node after node in graph order, to any node asked for (`through`).

    Kept between pieces: every tensor a later node reads, for every batch; memory is the largest such set
    times the number of batches. Each piece is a model of its own (the nodes since the last piece, reading
    the kept tensors as inputs), run by ONNX Runtime."""

    def __init__(self, model: ir.Model, samples: Samples, threads: int = DEFAULT_THREADS) -> None:
        proto = ir.to_proto(model)
        self._proto = proto
        self._nodes = list(proto.graph.node)
        self._constants = {tensor.name: tensor for tensor in proto.graph.initializer}
        self._last_read: dict[str, int] = {}
        for index, node in enumerate(self._nodes):
            for name in _names_read(node):
                self._last_read[name] = index
        feeds = list(samples.batches())
        self._kept = {value.name: [batch[value.name] for batch in feeds] for value in model.graph.inputs
                      if value.name in feeds[0]} if feeds else {}
        self._done = 0
        self._threads = threads

    def through(self, index: int, name: str) -> list[np.ndarray]:
        """Runs the nodes up to graph position `index` (inclusive; not yet run) and returns tensor `name`,
        which they make, for each batch."""
        if index < self._done:
            raise ValueError(f"node {index} has run already")
        nodes = self._nodes[self._done:index + 1]
        made = {output for node in nodes for output in node.output if output}
        wanted = sorted({output for output in made if self._last_read.get(output, -1) > index} | {name})
        read = {read for node in nodes for read in _names_read(node)}
        inputs = sorted(read & self._kept.keys())
        session = OrtSession(self._piece(nodes, inputs, wanted, read), threads=self._threads)
        try:
            batches = len(next(iter(self._kept.values()))) if self._kept else 0
            results = [session.run({key: self._kept[key][b] for key in inputs}, wanted) for b in range(batches)]
        finally:
            session.close()
        for output in wanted:
            self._kept[output] = [result[output] for result in results]
        for key in [key for key in self._kept if self._last_read.get(key, -1) <= index and key != name]:
            del self._kept[key]
        self._done = index + 1
        return self._kept[name]

    def shift(self, name: str, amount: np.ndarray, axis: int = 1) -> None:
        """Adds `amount` (one value per channel along `axis`) to the kept tensor `name`, in every batch."""
        for i, array in enumerate(self._kept[name]):
            shape = [1] * array.ndim
            shape[axis] = -1
            self._kept[name][i] = (array + np.asarray(amount).reshape(shape)).astype(array.dtype)

    def _piece(self, nodes: list[onnx.NodeProto], inputs: list[str], outputs: list[str], read: set[str]) -> bytes:
        """The serialized model of `nodes`, reading `inputs` (kept tensors) and the constants among `read`."""
        graph = onnx.helper.make_graph(
            nodes, "piece",
            [onnx.helper.make_tensor_value_info(
                key, onnx.helper.np_dtype_to_tensor_dtype(self._kept[key][0].dtype), None) for key in inputs],
            [onnx.helper.make_empty_tensor_value_info(output) for output in outputs],
            [self._constants[key] for key in sorted(read & self._constants.keys())])
        piece = onnx.ModelProto(ir_version=self._proto.ir_version, graph=graph)
        piece.opset_import.extend(self._proto.opset_import)
        piece.functions.extend(self._proto.functions)
        return piece.SerializeToString()

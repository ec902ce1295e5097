"""Second moments H = mean x·xᵀ of what each weighted node multiplies its weights with, over the
calibration samples (what eq. 34's weight rounding needs).

For a Conv, x is one receptive field (input channels of its group × kernel window), one per
output position (evenly thinned, see _positions_per_sample); for Gemm and MatMul, one row of the
input. Running sums: memory does not grow with the number of samples. A layer with more than
DIAGONAL_BLOCK inputs (VGG's first fully connected layer has 25,088) keeps H's diagonal blocks
of that size only (docs/quantization.md, section 2a): its whole H would take gigabytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from eightbit.calibrate.means import ChannelSums
from eightbit.calibrate.runner import run_pass
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples
from eightbit.ir.graph import attribute, constant_array

# Widest H kept whole; wider layers keep its diagonal blocks of this many inputs, (groups, blocks, B, B).
DIAGONAL_BLOCK = 4096
# A Conv's receptive fields taken per sample, at most: past it, every k-th output row and column (k the
# same for both). H is a mean; 4,096 fields a sample over the calibration set estimate it well, and
# VGG-19's first layers have 50,176.
POSITIONS_PER_SAMPLE = 4096
# Fewer suffice where the layer has few inputs and a whole-model measure checks the codes H chooses (the static
# schemes): a Conv's fields are thinned further while the samples still give this many per column of H
# (neighbouring fields overlap and hold nearly the same values).
FIELDS_PER_COLUMN = 8


def _positions_per_sample(columns: int, samples: int, thinned: bool) -> int:
    """How many receptive fields a sample gives a Conv with `columns` inputs per group, at most:
    POSITIONS_PER_SAMPLE, and where `thinned` only enough that `samples` samples give FIELDS_PER_COLUMN per
    column. H's cost is the fields times its columns squared; ResNet-50's first 3x3 convolutions have 3,136
    fields a sample and 576 columns."""
    if not thinned:
        return POSITIONS_PER_SAMPLE
    return min(POSITIONS_PER_SAMPLE, -(-FIELDS_PER_COLUMN * columns // max(samples, 1)))


def _conv_windows(node: ir.Node, x: np.ndarray, kernel: tuple[int, ...], positions: int) -> np.ndarray:
    """(groups, positions, channels per group × kernel) receptive fields of a 2-D Conv on one input (C, H, W),
    of every k-th output row and column, k the smallest that leaves at most `positions`."""
    strides = list(attribute(node, "strides", [1, 1]))
    dilations = list(attribute(node, "dilations", [1, 1]))
    pads = list(attribute(node, "pads", [0, 0, 0, 0]))
    auto_pad = attribute(node, "auto_pad", "NOTSET")
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for axis, (size, stride, span) in enumerate(zip(x.shape[1:], strides, spans)):
            total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
            small, large = total // 2, total - total // 2
            pads[axis], pads[axis + 2] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad == "VALID":
        pads = [0, 0, 0, 0]
    padded = np.pad(x, ((0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    windows = np.lib.stride_tricks.sliding_window_view(padded, spans, axis=(1, 2))
    windows = windows[:, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]  # C, Ho, Wo, kh, kw
    step = math.ceil(math.sqrt(windows.shape[1] * windows.shape[2] / positions))
    windows = windows[:, ::step, ::step]
    groups = int(attribute(node, "group", 1))
    channels, out_h, out_w = windows.shape[:3]
    per_group = channels // groups
    windows = windows.reshape(groups, per_group, out_h * out_w, *kernel)
    return windows.transpose(0, 2, 1, 3, 4).reshape(groups, out_h * out_w, per_group * math.prod(kernel))


def _node_inputs(node: ir.Node, x: np.ndarray, kernel: tuple[int, ...], positions: int) -> Iterator[np.ndarray]:
    """(groups, rows, columns) pieces: the vectors `node` multiplies its weights with, for one batch `x`
    (one piece per sample for a Conv, whose receptive fields are many, at most `positions` of them; `kernel`
    is its window)."""
    if node.op_type == "Conv":
        for sample in x:
            yield _conv_windows(node, sample, kernel, positions)
        return
    if node.op_type == "Gemm" and attribute(node, "transA", 0):
        x = x.T
    yield x.reshape(1, -1, x.shape[-1])


def _add_products(total: np.ndarray | None, vectors: np.ndarray) -> np.ndarray:
    """`total` (float64; None: zero) plus Σ x·xᵀ over the rows of `vectors` (groups, rows, columns), in place:
    (groups, columns, columns), or its diagonal blocks (groups, blocks, DIAGONAL_BLOCK, DIAGONAL_BLOCK),
    zero-padded, past DIAGONAL_BLOCK columns. Each piece's products are taken in float32 and added in float64."""
    groups, _, columns = vectors.shape
    if columns <= DIAGONAL_BLOCK:
        products = np.matmul(vectors.transpose(0, 2, 1), vectors)
        if total is None:
            return products.astype(np.float64)
        total += products
        return total
    blocks = -(-columns // DIAGONAL_BLOCK)
    if total is None:
        total = np.zeros((groups, blocks, DIAGONAL_BLOCK, DIAGONAL_BLOCK))
    for block in range(blocks):
        part = vectors[..., block * DIAGONAL_BLOCK:(block + 1) * DIAGONAL_BLOCK]
        width = part.shape[-1]
        total[:, block, :width, :width] += np.matmul(part.transpose(0, 2, 1), part)
    return total


class _MomentSum:
    """Σ x·xᵀ of one node's input vectors, and how many there were. Pieces wait until they hold at least as many
    rows as columns before their products are added: a late layer has few positions a sample (ResNet-50's last
    convolutions: 49 rows of 4,608 columns), and adding a (columns × columns) float64 matrix for each would
    cost more than the products."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0
        self._pending: list[np.ndarray] = []
        self._rows = 0

    def add(self, vectors: np.ndarray) -> None:
        self._pending.append(vectors)
        self._rows += vectors.shape[1]
        self.count += vectors.shape[1]
        if self._rows >= vectors.shape[2]:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            vectors = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending, axis=1)
            self.total = _add_products(self.total, vectors)
            self._pending, self._rows = [], 0


def weighted_nodes(graph: ir.Graph, candidates: list[ir.Node]) -> list[ir.Node]:
    """The nodes of `candidates` whose weights eq. 34 can round: 2-D Conv with a constant weight, Gemm and
    MatMul with a constant 2-D weight as second input. (ConvTranspose keeps nearest rounding.)"""
    chosen = []
    for node in candidates:
        weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        if weight is None or constant_array(node.inputs[0]) is not None:
            continue
        if (node.op_type == "Conv" and weight.ndim == 4) or (node.op_type in ("Gemm", "MatMul") and weight.ndim == 2):
            chosen.append(node)
    return chosen


class MomentPass:
    """The sums behind input_moments for `nodes` of one float model, fed a batch of its values at a time (a
    PassConsumer: the pass that collects the activation ranges can feed it too). It takes the batches `batches`
    counts (all where None), `count` samples in all; `sums`, where given, is fed the tensors it names from the
    same batches (bias correction's float means). `thinned`: a Conv's fields thinned to FIELDS_PER_COLUMN per
    column (_positions_per_sample)."""

    def __init__(self, nodes: list[ir.Node], count: int, sums: ChannelSums | None = None,
                 batches: range | None = None, thinned: bool = True) -> None:
        self.nodes, self.sums, self.batches = nodes, sums, batches
        inputs = [node.inputs[0].name for node in nodes]
        self.names = list(dict.fromkeys([*inputs, *(sums.names if sums is not None else ())]))
        weights = {node.name: constant_array(node.inputs[1]).shape for node in nodes}
        self._kernels = {name: tuple(shape[2:]) for name, shape in weights.items()}
        self._positions = {name: _positions_per_sample(math.prod(shape[1:]), count, thinned)
                           for name, shape in weights.items()}
        self._sums = {node.name: _MomentSum() for node in nodes}
        self.taken = 0  # batches taken so far

    def take(self, index: int, values: dict[str, np.ndarray]) -> None:
        if self.batches is not None and index not in self.batches:
            return
        self.taken += 1
        for node in self.nodes:
            x = np.asarray(values[node.inputs[0].name], np.float32)
            for vectors in _node_inputs(node, x, self._kernels[node.name], self._positions[node.name]):
                self._sums[node.name].add(vectors)
        if self.sums is not None:
            self.sums.take(index, values)

    def moments(self) -> dict[str, np.ndarray]:
        """Node name -> H (groups, columns, columns), float64, the mean of x·xᵀ over every vector taken."""
        moments = {}
        for name, moment_sum in self._sums.items():
            moment_sum.flush()
            if moment_sum.total is not None:
                moment_sum.total /= moment_sum.count  # in place: the widest layers' H take hundreds of MB
                moments[name] = moment_sum.total
        return moments


def input_moments(
    model: ir.Model, nodes: list[ir.Node], samples: Samples, threads: int = DEFAULT_THREADS,
    show_progress: bool = True,
) -> dict[str, np.ndarray]:
    """Node name -> H (groups, columns, columns), float64: the mean of x·xᵀ over every input vector of
    every sample (past DIAGONAL_BLOCK columns, its diagonal blocks: see _add_products).

    `nodes` are nodes of `model` (see weighted_nodes); `model` runs as it is, in float. A Conv's fields are not
    thinned past POSITIONS_PER_SAMPLE: the weights schemes keep eq. 34's codes on a layer's own error over this
    H, with no whole-model measure after it, and an H from few fields misleads it (on PP-OCRv4 rec's
    convolutions, 10 dB of output SQNR lost: BENCHMARKS.md, blocks section).
    """
    moment_pass = MomentPass(nodes, samples.count, thinned=False)
    run_pass(model, samples, [moment_pass], threads, show_progress, "input moments")
    return moment_pass.moments()

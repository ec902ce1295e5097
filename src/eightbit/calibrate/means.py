"""Per-channel means and ranges of tensors over the calibration samples (bias correction, equalization)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples


class ChannelSums:
    """Running per-channel sums of named tensors, the channels of each along its axis, fed one batch at a time:
    their means without keeping the batches."""

    def __init__(self, channel_axes: dict[str, int]) -> None:
        self.axes = dict(channel_axes)
        self._sums: dict[str, np.ndarray] = {}
        self._counts = dict.fromkeys(channel_axes, 0)

    def add(self, name: str, batch: np.ndarray) -> None:
        axis = self.axes[name] % batch.ndim
        others = tuple(i for i in range(batch.ndim) if i != axis)
        self._sums[name] = self._sums.get(name, 0.0) + np.sum(batch, axis=others, dtype=np.float64)
        self._counts[name] += batch.size // batch.shape[axis]

    def means(self) -> dict[str, np.ndarray]:
        """Name -> mean over every axis but its channel axis, of every batch added."""
        return {name: self._sums[name] / self._counts[name] for name in self.axes if self._counts[name]}


def _batches(model: ir.Model, names: list[str], samples: Samples, threads: int) -> Iterator[tuple[str, np.ndarray]]:
    """(name, that tensor in one batch) for each named tensor (a graph input or a node's output) and each batch
    of `samples`, as the float model computes it."""
    input_names = {v.name for v in model.graph.inputs}
    values = {v.name: v for node in model.graph for v in node.outputs}
    produced = [name for name in names if name not in input_names]
    session = session_with_outputs(model, [values[name] for name in produced], threads)
    try:
        for feeds in samples.batches():
            results = session.run(feeds, produced) if produced else {}
            for name in names:
                yield name, np.asarray(feeds[name] if name in input_names else results[name])
    finally:
        session.close()


def channel_means(
    model: ir.Model, channel_axes: dict[str, int], samples: Samples, threads: int = DEFAULT_THREADS,
) -> dict[str, np.ndarray]:
    """Name -> mean over every axis but `channel_axes[name]`, over `samples` (a running sum: memory does not
    grow with the number of samples)."""
    sums = ChannelSums(channel_axes)
    for name, batch in _batches(model, list(channel_axes), samples, threads):
        sums.add(name, batch)
    return sums.means()


def channel_ranges(
    model: ir.Model, names: list[str], samples: Samples, threads: int = DEFAULT_THREADS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (lowest, highest) value of each channel (axis 1) of that tensor over `samples`."""
    lows: dict[str, np.ndarray] = {}
    highs: dict[str, np.ndarray] = {}
    for name, batch in _batches(model, names, samples, threads):
        others = (0, *range(2, batch.ndim))
        low, high = batch.min(axis=others).astype(np.float64), batch.max(axis=others).astype(np.float64)
        lows[name] = np.minimum(lows[name], low) if name in lows else low
        highs[name] = np.maximum(highs[name], high) if name in highs else high
    return {name: (lows[name], highs[name]) for name in names if name in lows}

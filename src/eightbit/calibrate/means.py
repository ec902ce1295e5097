"""Per-channel means and ranges of tensors over the calibration samples (bias correction, equalization)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples


def _channel_rows(
    model: ir.Model, channel_axes: dict[str, int], samples: Samples, threads: int,
) -> Iterator[tuple[str, np.ndarray]]:
    """(name, that tensor in one batch as rows × channels, float64) for each named tensor (a graph input or
    a node's output) and each batch of `samples`, the channels along `channel_axes[name]`."""
    input_names = {v.name for v in model.graph.inputs}
    values = {v.name: v for node in model.graph for v in node.outputs}
    produced = [name for name in channel_axes if name not in input_names]
    session = session_with_outputs(model, [values[name] for name in produced], threads)
    try:
        for feeds in samples.batches():
            results = session.run(feeds, produced) if produced else {}
            for name, axis in channel_axes.items():
                batch = np.asarray(feeds[name] if name in input_names else results[name], np.float64)
                yield name, np.moveaxis(batch, axis, -1).reshape(-1, batch.shape[axis])
    finally:
        session.close()


def channel_means(
    model: ir.Model, channel_axes: dict[str, int], samples: Samples, threads: int = DEFAULT_THREADS,
) -> dict[str, np.ndarray]:
    """Name -> mean over every axis but `channel_axes[name]`, over `samples` (a running sum: memory does not
    grow with the number of samples)."""
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(channel_axes, 0)
    for name, rows in _channel_rows(model, channel_axes, samples, threads):
        sums[name] = sums.get(name, 0.0) + rows.sum(axis=0)
        counts[name] += rows.shape[0]
    return {name: sums[name] / counts[name] for name in channel_axes if counts[name]}


def channel_ranges(
    model: ir.Model, names: list[str], samples: Samples, threads: int = DEFAULT_THREADS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (lowest, highest) value of each channel (axis 1) of that tensor over `samples`."""
    lows: dict[str, np.ndarray] = {}
    highs: dict[str, np.ndarray] = {}
    for name, rows in _channel_rows(model, dict.fromkeys(names, 1), samples, threads):
        low, high = rows.min(axis=0), rows.max(axis=0)
        lows[name] = np.minimum(lows[name], low) if name in lows else low
        highs[name] = np.maximum(highs[name], high) if name in highs else high
    return {name: (lows[name], highs[name]) for name in names if name in lows}

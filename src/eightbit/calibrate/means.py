"""Per-channel means and ranges of tensors over the calibration samples (bias correction, equalization)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples


def channel_means(
    model: ir.Model, channel_axes: dict[str, int], samples: Samples, threads: int = DEFAULT_THREADS,
) -> dict[str, np.ndarray]:
    """Name -> mean over every axis but `channel_axes[name]`, over `samples` (a running sum: memory does not
    grow with the number of samples)."""
    input_names = {v.name for v in model.graph.inputs}
    values = {v.name: v for node in model.graph for v in node.outputs}
    produced = [name for name in channel_axes if name not in input_names]
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(channel_axes, 0)
    session = session_with_outputs(model, [values[name] for name in produced], threads)
    try:
        for feeds in samples.batches():
            results = session.run(feeds, produced) if produced else {}
            for name, axis in channel_axes.items():
                batch = np.asarray(feeds[name] if name in input_names else results[name], np.float64)
                moved = np.moveaxis(batch, axis, -1).reshape(-1, batch.shape[axis])
                sums[name] = sums.get(name, 0.0) + moved.sum(axis=0)
                counts[name] += moved.shape[0]
    finally:
        session.close()
    return {name: sums[name] / counts[name] for name in channel_axes if counts[name]}


def channel_ranges(
    model: ir.Model, names: list[str], samples: Samples, threads: int = DEFAULT_THREADS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (lowest, highest) value of each channel (axis 1) of that tensor over `samples`."""
    values = {v.name: v for node in model.graph for v in node.outputs}
    lows: dict[str, np.ndarray] = {}
    highs: dict[str, np.ndarray] = {}
    session = session_with_outputs(model, [values[name] for name in names], threads)
    try:
        for feeds in samples.batches():
            results = session.run(feeds, names)
            for name in names:
                batch = np.asarray(results[name], np.float32)
                moved = np.moveaxis(batch, 1, -1).reshape(-1, batch.shape[1])
                low, high = moved.min(axis=0), moved.max(axis=0)
                lows[name] = np.minimum(lows[name], low) if name in lows else low
                highs[name] = np.maximum(highs[name], high) if name in highs else high
    finally:
        session.close()
    return {name: (lows[name], highs[name]) for name in names if name in lows}

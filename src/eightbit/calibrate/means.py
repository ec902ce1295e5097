"""Per-channel means and ranges of tensors over the calibration samples (bias correction, equalization)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from eightbit.calibrate.runner import run_pass
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples


class ChannelSums:
    """Running per-channel sums of named tensors, the channels of each along its axis, fed one batch at a time:
    their means without keeping the batches (a PassConsumer of calibrate/runner.run_pass)."""

    def __init__(self, channel_axes: dict[str, int]) -> None:
        self.axes = dict(channel_axes)
        self.names = list(channel_axes)
        self._sums: dict[str, np.ndarray] = {}
        self._counts = dict.fromkeys(channel_axes, 0)

    def add(self, name: str, batch: np.ndarray) -> None:
        axis = self.axes[name] % batch.ndim
        others = tuple(i for i in range(batch.ndim) if i != axis)
        self._sums[name] = self._sums.get(name, 0.0) + np.sum(batch, axis=others, dtype=np.float64)
        self._counts[name] += batch.size // batch.shape[axis]

    def take(self, index: int, values: dict[str, np.ndarray]) -> None:
        for name in self.names:
            self.add(name, np.asarray(values[name]))

    def means(self) -> dict[str, np.ndarray]:
        """Name -> mean over every axis but its channel axis, of every batch added."""
        return {name: self._sums[name] / self._counts[name] for name in self.axes if self._counts[name]}


class _ChannelRanges:
    """The lowest and highest value of each channel (axis 1) of named tensors, fed one batch at a time."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.lows: dict[str, np.ndarray] = {}
        self.highs: dict[str, np.ndarray] = {}

    def take(self, index: int, values: dict[str, np.ndarray]) -> None:
        for name in self.names:
            batch = np.asarray(values[name])
            others = (0, *range(2, batch.ndim))
            low, high = batch.min(axis=others).astype(np.float64), batch.max(axis=others).astype(np.float64)
            self.lows[name] = np.minimum(self.lows[name], low) if name in self.lows else low
            self.highs[name] = np.maximum(self.highs[name], high) if name in self.highs else high


def channel_means(
    model: ir.Model, channel_axes: dict[str, int], samples: Samples, threads: int = DEFAULT_THREADS,
) -> dict[str, np.ndarray]:
    """Name -> mean over every axis but `channel_axes[name]`, over `samples` (a running sum: memory does not
    grow with the number of samples)."""
    sums = ChannelSums(channel_axes)
    run_pass(model, samples, [sums], threads, show_progress=False)
    return sums.means()


def channel_ranges(
    model: ir.Model, names: list[str], samples: Samples, threads: int = DEFAULT_THREADS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (lowest, highest) value of each channel (axis 1) of that tensor over `samples`."""
    ranges = _ChannelRanges(names)
    run_pass(model, samples, [ranges], threads, show_progress=False)
    return {name: (ranges.lows[name], ranges.highs[name]) for name in names if name in ranges.lows}

"""A streaming histogram with a fixed number of bins, for the clipping-range methods of quant/clipping.py."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from eightbit.calibrate.minmax import MinMaxObserver

# (negative counts, positive counts, bin width) -> (low, high): quant.clipping's methods.
ChooseRange = Callable[[np.ndarray, np.ndarray, float], tuple[float, float]]

BINS_PER_SIDE = 4096


class HistogramObserver:
    """Counts of |x| for negative and positive values, in BINS_PER_SIDE bins of one shared width.

    Bin i of a side covers [i * width, (i + 1) * width) in magnitude, so 0 is always an edge.
    When a batch exceeds the covered range the width doubles, merging neighbouring bins exactly,
    until it fits: memory is fixed whatever the number of samples, and the result does not depend
    on how the samples are split into batches once the width has settled.
    """

    def __init__(self, choose: ChooseRange) -> None:
        self.choose = choose
        self.width = 0.0
        self.negative = np.zeros(BINS_PER_SIDE, dtype=np.int64)
        self.positive = np.zeros(BINS_PER_SIDE, dtype=np.int64)
        self.seen = MinMaxObserver()

    def _grow_to(self, magnitude: float) -> None:
        if self.width == 0.0:
            # First data: a power of two at least magnitude / bins, so widths stay exact binary fractions.
            self.width = float(2.0 ** np.ceil(np.log2(max(magnitude, np.finfo(np.float32).tiny) / BINS_PER_SIDE)))
        while magnitude >= self.width * BINS_PER_SIDE:
            for side in (self.negative, self.positive):
                merged = side.reshape(-1, 2).sum(axis=1)
                side[: BINS_PER_SIDE // 2] = merged
                side[BINS_PER_SIDE // 2:] = 0
            self.width *= 2.0

    def observe(self, batch: np.ndarray) -> None:
        values = np.asarray(batch, dtype=np.float64).reshape(-1)
        if not values.size:
            return
        self.seen.observe(values)
        self._grow_to(max(-self.seen.minimum, self.seen.maximum))
        magnitude = np.abs(values)
        index = np.minimum((magnitude / self.width).astype(np.int64), BINS_PER_SIDE - 1)
        self.negative += np.bincount(index[values < 0], minlength=BINS_PER_SIDE)
        self.positive += np.bincount(index[values >= 0], minlength=BINS_PER_SIDE)

    def range(self) -> tuple[float, float]:
        return self.range_by(self.choose)

    def range_by(self, choose: ChooseRange) -> tuple[float, float]:
        """The range another method chooses from the same counts."""
        minimum, maximum = self.seen.range()
        if self.width == 0.0:  # nothing observed
            return minimum, maximum
        low, high = choose(self.negative, self.positive, self.width)
        # Never wider than what was seen.
        return max(low, minimum), min(high, maximum)

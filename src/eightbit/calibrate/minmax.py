"""The min/max observer: the range is the smallest and largest value ever seen."""

from __future__ import annotations

import math

import numpy as np


class MinMaxObserver:
    """Streaming running minimum and maximum; constant memory whatever the number of samples."""

    def __init__(self) -> None:
        self.minimum = math.inf
        self.maximum = -math.inf

    def observe(self, batch: np.ndarray) -> None:
        if batch.size:
            self.minimum = min(self.minimum, float(np.min(batch)))
            self.maximum = max(self.maximum, float(np.max(batch)))

    def range(self) -> tuple[float, float]:
        if self.minimum > self.maximum:
            return 0.0, 0.0
        return self.minimum, self.maximum

"""Activation ranges from calibration data: streaming observers and the loop that feeds them."""

from eightbit.calibrate.minmax import MinMaxObserver
from eightbit.calibrate.runner import collect_ranges

__all__ = ["MinMaxObserver", "collect_ranges"]

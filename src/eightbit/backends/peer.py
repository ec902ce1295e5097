"""The peer every speed and accuracy figure is set beside: ONNX Runtime's own static quantizer.

`quantize_static` with QDQ, u8 activations, s8 per-channel weights and min/max calibration on the
same samples eightbit calibrates on. It refuses models below opset 13, so it is given the model
upgraded as eightbit upgrades it (eightbit.ir.load_model).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from eightbit.datasets import Samples
from eightbit.ir import load_model, save_model

PEER_NAME = "ORT quantize_static"


class _Feeds(CalibrationDataReader):
    def __init__(self, samples: Samples) -> None:
        self._feeds = samples.batches()

    def get_next(self):
        return next(self._feeds, None)


def quantize_with_onnxruntime(float_path: str | os.PathLike, target: str | os.PathLike, samples: Samples) -> None:
    """Write ONNX Runtime's static QDQ quantization of `float_path` to `target`."""
    with tempfile.TemporaryDirectory(prefix="eightbit-peer-") as scratch:
        upgraded = save_model(load_model(float_path), Path(scratch) / "upgraded.onnx")
        quiet = logging.getLogger()  # the quantizer advises pre-processing on the root logger, every call
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            quantize_static(
                str(upgraded), os.fspath(target), _Feeds(samples), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
            )
        finally:
            quiet.setLevel(level)

"""The peers every speed and accuracy figure is set beside: ONNX Runtime's own static quantizer, and NNCF.

`quantize_static` with QDQ, u8 activations, s8 per-channel weights and min/max calibration on the
same samples eightbit calibrates on. It refuses models below opset 13, so it is given the model
upgraded as eightbit upgrades it (eightbit.ir.load_model); NNCF is given the same. NNCF is optional
(the bench extra): its rows are left out where it is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
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


def quantize_with_onnxruntime(float_path: str | os.PathLike, target: str | os.PathLike, samples: Samples) -> Path:
    """Write ONNX Runtime's static QDQ quantization of `float_path` to `target`; returns `target`."""
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
    return Path(target)


NNCF_NAME = "NNCF"


def nncf_available() -> bool:
    """Whether NNCF is installed (pip install nncf; the bench extra)."""
    return importlib.util.find_spec("nncf") is not None


def quantize_with_nncf(float_path: str | os.PathLike, target: str | os.PathLike, samples: Samples,
                       openvino: bool = False) -> Path:
    """Write NNCF's post-training quantization (`nncf.quantize`, its defaults, every calibration sample) of
    `float_path` beside `target`: of the ONNX model, as `target`.onnx; or, with `openvino`, of OpenVINO's
    conversion of it, as an OpenVINO model `target`.xml (the path NNCF's OpenVINO users take). Returns it."""
    import nncf

    target = Path(target)
    feeds = list(samples.batches())
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its notices, and its progress bars below, quiet
    with tempfile.TemporaryDirectory(prefix="eightbit-nncf-") as scratch, \
            contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return _nncf_written(nncf, save_model(load_model(float_path), Path(scratch) / "upgraded.onnx"), target,
                                 feeds, openvino)
        finally:
            logger.setLevel(level)


def _nncf_written(nncf, upgraded: Path, target: Path, feeds: list[dict], openvino: bool) -> Path:
    """nncf.quantize of the model at `upgraded` on `feeds` (each a batch), written beside `target`."""
    if openvino:
        import openvino as ov

        quantized = nncf.quantize(ov.convert_model(str(upgraded)), nncf.Dataset(feeds), subset_size=len(feeds))
        written = target.with_suffix(".xml")
        ov.save_model(quantized, str(written))
        return written
    import onnx

    quantized = nncf.quantize(onnx.load(str(upgraded)), nncf.Dataset(feeds), subset_size=len(feeds))
    written = target.with_suffix(".onnx")
    onnx.save(quantized, str(written))
    return written

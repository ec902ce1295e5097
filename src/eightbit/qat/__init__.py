"""Quantization-aware training in PyTorch; the only package of eightbit that imports torch.

    prepared = eightbit.qat.prepare(model, (example,), scheme="eightbit")
    ...train prepared as usual (int8 forward, float backward)...
    eightbit.qat.export(prepared, "model.qdq.onnx")
    eightbit quantize model.qdq.onnx -o model.int8.onnx      # the learned grids, no calibration
"""

from eightbit.qat.export import export
from eightbit.qat.prepare import CaptureError, FloatOp, prepare

__all__ = ["CaptureError", "FloatOp", "export", "prepare"]

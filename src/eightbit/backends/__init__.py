"""Runtimes that execute models: ONNX Runtime (fast) and, later, the integer reference."""

from eightbit.backends.onnxruntime import OrtSession

__all__ = ["OrtSession"]

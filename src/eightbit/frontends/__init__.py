"""Models from the frameworks users train in, as ONNX models: the first step of quantize for them."""

from __future__ import annotations

import os

import onnx_ir as ir

from eightbit.frontends.pytorch import from_pt2, is_pt2_path
from eightbit.frontends.tensorflow import FOUND, TensorNames, from_tensorflow, is_tensorflow_path


def is_framework_file(model: object) -> bool:
    """Whether `model` names a file (or SavedModel folder) a framework wrote: a .pt2 program or a TensorFlow
    model, converted to ONNX before anything reads it."""
    return is_pt2_path(model) or is_tensorflow_path(model)


def converted_file(model: str | os.PathLike | object, names: TensorNames = FOUND) -> ir.Model | object:
    """The ONNX model a .pt2 program or a TensorFlow model converts to (`names`: a frozen graph's inputs and
    outputs); any other model as it is."""
    if is_tensorflow_path(model):
        return from_tensorflow(model, names)
    return from_pt2(model) if is_pt2_path(model) else model

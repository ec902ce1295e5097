"""PyTorch models in: a torch.nn.Module (with example inputs), a torch.export.ExportedProgram, or one saved
as a .pt2 file, exported to ONNX by PyTorch's own exporter (torch.onnx.export, dynamo=True); what comes out
is quantized as any ONNX model.

torch is imported only when a PyTorch model is given, and only from the caller's own install: eightbit
does not depend on it. The exporter needs onnxscript (pip install onnxscript).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx_ir as ir

from eightbit.errors import InputError, first_line

# The opset the exporter writes (its own default at torch 2.13; every op the passes know exists in it).
EXPORT_OPSET = 18
PT2_SUFFIX = ".pt2"


def is_torch_model(model: object) -> bool:
    """Whether `model` is a torch.nn.Module or a torch.export.ExportedProgram. Never imports torch: an object
    of either kind means the caller has imported it already."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, (torch.nn.Module, torch.export.ExportedProgram))


def is_pt2_path(model: object) -> bool:
    """Whether `model` names a file saved by torch.export.save (by its .pt2 suffix)."""
    return isinstance(model, (str, os.PathLike)) and Path(model).suffix == PT2_SUFFIX


def _torch():
    try:
        import torch
    except ImportError:
        raise InputError("a .pt2 model needs PyTorch: pip install torch (its CPU build is enough)") from None
    return torch


def _batch_dynamic(torch, inputs: tuple) -> tuple:
    """dynamic_shapes that leave each tensor input's first (batch) dimension free where the module allows it."""
    return tuple({0: torch.export.Dim.AUTO} if isinstance(x, torch.Tensor) and x.ndim > 0 else None
                 for x in inputs)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter's notices held back (its warnings, and its log lines about optional packages such as
    torchvision): what it writes is checked when loaded."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export(torch, model, inputs: tuple | None, what: str) -> ir.Model:
    """torch.onnx.export's ONNX model of `model`, or InputError naming what failed."""
    try:
        import onnxscript  # noqa: F401  (the exporter's own dependency: a clearer message than its ImportError)
    except ImportError:
        raise InputError(f"exporting {what} to ONNX needs onnxscript: pip install onnxscript") from None
    dynamic = _batch_dynamic(torch, inputs) if inputs is not None else None
    try:
        with quiet_exporter():
            program = torch.onnx.export(model, inputs, dynamo=True, opset_version=EXPORT_OPSET,
                                        dynamic_shapes=dynamic, verbose=False)
    except Exception as error:  # the exporter raises many kinds; each is the user's model not exporting
        first = first_line(error)[:200]
        raise InputError(f"{what} did not export to ONNX ({first}); export it yourself with torch.onnx.export and "
                         "pass the .onnx file") from None
    return program.model


def from_torch(model, example_inputs) -> ir.Model:
    """The ONNX model of a torch.nn.Module (run on `example_inputs`, a tensor or a tuple of them, to trace it;
    in eval mode) or of a torch.export.ExportedProgram (its own example inputs). The batch dimension stays free
    where the module allows it (PyTorch fixes dimensions of size 1: give examples of batch 2 or more). The
    model's inputs take the names of forward()'s arguments."""
    torch = sys.modules["torch"]
    if isinstance(model, torch.export.ExportedProgram):
        return _export(torch, model, None, "the exported program")
    if example_inputs is None:
        raise InputError("a PyTorch module needs example_inputs=(tensor, ...) to be exported to ONNX: inputs of "
                         "the shape and type it takes")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    was_training = model.training
    model.eval()
    try:
        return _export(torch, model, inputs, f"the module {type(model).__name__}")
    finally:
        model.train(was_training)


def from_pt2(path: str | os.PathLike) -> ir.Model:
    """The ONNX model of the ExportedProgram that torch.export.save wrote to `path`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give the path of a .pt2 file torch.export.save wrote")
    torch = _torch()
    try:
        program = torch.export.load(path)
    except Exception as error:  # a file torch cannot read is bad input
        first = first_line(error)[:200]
        raise InputError(f"{path}: not a program torch.export.save wrote ({first})") from None
    return _export(torch, program, None, str(path))

"""Runtimes that execute models: ONNX Runtime (fast) and the integer reference (exact)."""

from __future__ import annotations

import os

import onnx_ir as ir

from eightbit.backends.onnxruntime import OrtSession
from eightbit.backends.reference import ReferenceSession
from eightbit.config import BACKENDS, DEFAULT_THREADS
from eightbit.errors import InputError


def open_session(model: ir.Model | str | os.PathLike, backend: str = "ort",
                 threads: int = DEFAULT_THREADS) -> OrtSession | ReferenceSession:
    """A session on `model` in the named backend: "ort" (ONNX Runtime) or "reference" (integer kernels)."""
    if backend == "ort":
        return OrtSession(model, threads=threads)
    if backend == "reference":
        return ReferenceSession(model)
    raise InputError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "OrtSession", "ReferenceSession", "open_session"]

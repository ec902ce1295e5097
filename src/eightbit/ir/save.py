"""Write models atomically: the destination is either the old file or the complete new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx_ir as ir

from eightbit.errors import InputError

# Protobuf cannot hold a message of 2 GiB; tensors go to a side file well before that.
_EXTERNAL_DATA_ABOVE_BYTES = 1536 * 1024 * 1024


def _tensor_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def model_to_bytes(model: ir.Model) -> bytes:
    """Serialized model, for models under the protobuf limit."""
    return ir.to_proto(model).SerializeToString(deterministic=True)


def save_model(model: ir.Model, path: str | os.PathLike) -> Path:
    """Save to `path` through a temporary file in the same folder and an atomic rename.

    Models whose tensors exceed ~1.5 GiB keep their tensors in `<name>.data` beside it.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{folder}: output folder does not exist; create it or choose another -o")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{folder}: output folder is not writable; choose another -o")
    external = _tensor_bytes(model) > _EXTERNAL_DATA_ABOVE_BYTES
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(descriptor)
    try:
        if external:
            ir.save(model, temporary, external_data=f"{path.name}.data")
        else:
            Path(temporary).write_bytes(model_to_bytes(model))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path

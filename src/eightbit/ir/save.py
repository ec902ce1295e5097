"""Write models atomically: the destination is either the old file or the complete new one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
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


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike) -> Path:
    """Refuse, before any work, an output that would overwrite an input or cannot be written."""
    output = Path(output)
    for source in map(Path, inputs):
        same = os.path.samefile(source, output) if source.exists() and output.exists() else False
        if same or source.resolve() == output.resolve():
            raise InputError(f"{output}: the output would overwrite an input; choose another -o")
    if output.is_dir():
        raise InputError(f"{output}: is a folder; give -o a file name")
    if output.exists() and not output.is_file():
        raise InputError(f"{output}: is not a regular file (a pipe or a device); give -o a file name")
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{folder}: output folder does not exist; create it or choose another -o")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{folder}: output folder is not writable; choose another -o")
    return output


def _mode_for(path: Path) -> int:
    """The mode a file written at `path` takes: the old file's where it replaces one, else what the umask
    leaves of 0o666 (as a file opened for writing would get)."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _synced(path: Path) -> None:
    """Flush `path`'s bytes to the disk, so that a rename after it never exposes an empty or partial file."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = ".tmp",
                     check: Callable[[Path], None] | None = None) -> Path:
    """Call write(temporary) on a temporary file in `path`'s folder, then check(temporary) where given (it
    raises to stop the write), then rename it onto `path`.

    Readers see either the old file or the complete new one; a failed or interrupted write leaves no trace.
    The temporary name is short (a long output name stays valid), its bytes are synced before the rename,
    and the file takes the mode of the one it replaces, or the umask's.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=".eightbit-", suffix=suffix, dir=path.parent)
    os.close(descriptor)
    try:
        write(Path(temporary))
        if check is not None:
            check(Path(temporary))
        os.chmod(temporary, _mode_for(path))
        _synced(Path(temporary))
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path


def _save_external(model: ir.Model, path: Path, check: Callable[[Path], None] | None) -> None:
    """`model` at `path` with its tensors in `<name>.data` beside it: both written in a temporary folder beside
    `path`, checked there where `check` is given, and renamed into place, the data first, so a reader never
    finds the model without its tensors."""
    data = path.with_name(f"{path.name}.data")
    folder = Path(tempfile.mkdtemp(prefix=".eightbit-", dir=path.parent))
    try:
        ir.save(model, folder / path.name, external_data=data.name)
        if check is not None:
            check(folder / path.name)
        for written, target in ((folder / data.name, data), (folder / path.name, path)):
            os.chmod(written, _mode_for(target))
            _synced(written)
            os.replace(written, target)
    finally:
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()


def save_model(model: ir.Model, path: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Path:
    """Save to `path` through a temporary file in the same folder and an atomic rename; `check`, where given,
    reads the written file first and raises to leave `path` as it was.

    Models whose tensors exceed ~1.5 GiB keep their tensors in `<name>.data` beside it.
    """
    path = check_output_path(path)
    if _tensor_bytes(model) > _EXTERNAL_DATA_ABOVE_BYTES:
        _save_external(model, path, check)
        return path
    return write_atomically(path, lambda temporary: temporary.write_bytes(model_to_bytes(model)), check=check)

"""Read an ONNX file into onnx_ir, upgraded to an opset the converter works in."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnx.version_converter
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from google.protobuf.message import DecodeError

from eightbit.config import MIN_OPSET
from eightbit.errors import InputError

_OLDEST_OPSET = 7


def _read_proto(path: Path) -> onnx.ModelProto:
    try:
        proto = onnx.load_model(os.fspath(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as error:
        raise InputError(f"{path}: not a readable ONNX model ({type(error).__name__}); check the file") from None
    if not proto.graph.node or proto.ir_version <= 0:
        raise InputError(f"{path}: not an ONNX model (no graph found); check the file is complete")
    try:
        onnx.load_external_data_for_model(proto, os.fspath(path.parent))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: external data could not be read ({error}); keep the data file beside it") from None
    return proto


def _default_opset(proto: onnx.ModelProto) -> int:
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    raise InputError("the model imports no default-domain opset; it is not a standard ONNX model")


def _check(proto: onnx.ModelProto, path: Path) -> None:
    try:
        if proto.ByteSize() < onnx.checker.MAXIMUM_PROTOBUF:
            onnx.checker.check_model(proto)
        else:
            onnx.checker.check_model(os.fspath(path))
    except onnx.checker.ValidationError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "invalid model"
        raise InputError(f"{path}: the ONNX checker rejects this model: {first}") from None


def load_model(path: str | os.PathLike) -> ir.Model:
    """Load, validate and upgrade a model to at least opset MIN_OPSET.

    Initializers listed among the graph inputs (an old exporter habit) stop being inputs:
    callers feed only the true inputs, as before.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give the path of an .onnx model")
    proto = _read_proto(path)
    _check(proto, path)
    opset = _default_opset(proto)
    if opset < _OLDEST_OPSET:
        raise InputError(f"{path}: opset {opset} is older than {_OLDEST_OPSET}; re-export the model")
    if opset < MIN_OPSET:
        try:
            proto = onnx.version_converter.convert_version(proto, MIN_OPSET)
        except Exception as error:  # the converter raises bare RuntimeErrors from C++
            raise InputError(
                f"{path}: could not upgrade opset {opset} to {MIN_OPSET} ({str(error).splitlines()[0]}); "
                f"re-export the model at opset {MIN_OPSET} or newer"
            ) from None
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # shape information is a help, not a requirement
        pass
    model = ir.serde.deserialize_model(proto)
    common_passes.RemoveInitializersFromInputsPass()(model)
    return model

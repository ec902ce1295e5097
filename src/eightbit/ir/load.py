"""Read an ONNX file into onnx_ir, upgraded to an opset the converter works in."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnx.version_converter
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from google.protobuf.message import DecodeError, EncodeError

from eightbit.config import MIN_OPSET
from eightbit.errors import InputError, first_line

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


def _fits_protobuf(proto: onnx.ModelProto) -> bool:
    """Whether `proto` (its tensors loaded) is under protobuf's 2 GiB limit; protobuf cannot even size one above."""
    try:
        return proto.ByteSize() < onnx.checker.MAXIMUM_PROTOBUF
    except EncodeError:
        return False


def _repeated(field) -> bool:
    """Whether a protobuf field is repeated (newer protobuf says so directly; older ones by the field's label)."""
    repeated = getattr(field, "is_repeated", None)
    return repeated if repeated is not None else field.label == field.LABEL_REPEATED


def _broken_text(message, where: str = "model") -> str | None:
    """Where a text field of `message` (or of a message inside it) holds bytes that are not UTF-8, named as a
    path of fields; None where all its text is. Protobuf reads such bytes without complaint (ONNX's messages
    are proto2), and they fail only when the model is written again."""
    for field, value in message.ListFields():
        values = value if _repeated(field) else [value]
        if field.type == field.TYPE_STRING:
            if any(isinstance(text, bytes) for text in values):
                return f"{where}.{field.name}"
        elif field.type == field.TYPE_MESSAGE:
            for index, item in enumerate(values):
                found = _broken_text(item, f"{where}.{field.name}[{index}]")
                if found is not None:
                    return found
    return None


def _check(proto: onnx.ModelProto, source: str, path: Path | None) -> None:
    broken = _broken_text(proto)
    if broken is not None:
        raise InputError(f"{source}: {broken} is not valid UTF-8 text; the file is damaged, or not an ONNX model")
    try:
        if _fits_protobuf(proto):
            onnx.checker.check_model(proto)
        elif path is not None:
            onnx.checker.check_model(os.fspath(path))
    except onnx.checker.ValidationError as error:
        first = first_line(error, "invalid model")
        raise InputError(f"{source}: the ONNX checker rejects this model: {first}") from None


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The files a model file keeps its external tensors in (none for a model that is not readable: loading it
    says why)."""
    path = Path(path)
    try:
        proto = onnx.load_model(os.fspath(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError):
        return []
    locations = {entry.value for tensor in _tensors(proto.graph) if tensor.data_location == onnx.TensorProto.EXTERNAL
                 for entry in tensor.external_data if entry.key == "location"}
    return [path.parent / location for location in sorted(locations)]


def _tensors(graph: onnx.GraphProto):
    """Every tensor a graph holds: its initializers and its nodes' tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(subgraph)


def _raise_ir_version(proto: onnx.ModelProto) -> None:
    """The IR version the model's opsets need, at least: an opset-7 model (IR version 3, whose initializers
    must also be graph inputs) upgraded to MIN_OPSET would otherwise be written as an invalid model."""
    needed = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    proto.ir_version = max(proto.ir_version, needed)


# Tensors of more bytes than this are left out of the stand-in shape inference reads above 2 GiB: shapes
# never depend on their values (those of Reshape and the like are small).
_STAND_IN_TENSOR_BYTES = 1 << 20


def _with_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """`proto` with ONNX's shape inference (data propagation on) where it succeeds, `proto` as it is where not:
    shapes are a help, not a requirement. Above protobuf's 2 GiB, which inference cannot take, it runs on the
    same graph with its large tensors' bytes set aside and put back after (each keeps its type and shape):
    without it the planner would see tensors of unknown type and quantize nothing."""
    set_aside: list[tuple[onnx.TensorProto, bytes]] = []
    if not _fits_protobuf(proto):
        for tensor in proto.graph.initializer:
            if len(tensor.raw_data) > _STAND_IN_TENSOR_BYTES:
                set_aside.append((tensor, tensor.raw_data))
                tensor.ClearField("raw_data")
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:
        inferred = None
    finally:
        for tensor, data in set_aside:
            tensor.raw_data = data
    if inferred is None:
        return proto
    if not set_aside:
        return inferred
    proto.graph.value_info.extend(inferred.graph.value_info)
    for value, typed in zip(proto.graph.output, inferred.graph.output):
        value.type.CopyFrom(typed.type)
    return proto


def load_model(path: str | os.PathLike) -> ir.Model:
    """Load, validate and upgrade a model to at least opset MIN_OPSET (see `standard_model`)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the path of an .onnx model file")
    if not path.is_file():
        raise InputError(f"{path}: no such file; give the path of an .onnx model")
    return standard_model(_read_proto(path), str(path), path)


def standard_model(proto: onnx.ModelProto, source: str = "the model", path: Path | None = None) -> ir.Model:
    """Validate, upgrade to at least opset MIN_OPSET and infer shapes: the form every pass expects.

    Initializers listed among the graph inputs (an old exporter habit) stop being inputs:
    callers feed only the true inputs, as before. `source` names the model in error messages.
    """
    _check(proto, source, path)
    opset = _default_opset(proto)
    if opset < _OLDEST_OPSET:
        raise InputError(f"{source}: opset {opset} is older than {_OLDEST_OPSET}; re-export the model")
    if opset < MIN_OPSET:
        try:
            proto = onnx.version_converter.convert_version(proto, MIN_OPSET)
        except Exception as error:  # the converter raises bare RuntimeErrors from C++
            raise InputError(
                f"{source}: could not upgrade opset {opset} to {MIN_OPSET} ({str(error).splitlines()[0]}); "
                f"re-export the model at opset {MIN_OPSET} or newer"
            ) from None
    _raise_ir_version(proto)
    proto = _with_shapes(proto)
    model = ir.serde.deserialize_model(proto)
    common_passes.RemoveInitializersFromInputsPass()(model)
    return model


def as_model(model: ir.Model | onnx.ModelProto | str | os.PathLike) -> ir.Model:
    """A path, an onnx.ModelProto or an onnx_ir.Model in the standard form; in-memory models are copied."""
    if isinstance(model, ir.Model):
        return standard_model(ir.to_proto(model))
    if isinstance(model, onnx.ModelProto):
        return standard_model(model)
    return load_model(model)


def upgraded(model: ir.Model, opset: int) -> ir.Model:
    """`model` in default-domain opset `opset` or newer (a new model; `model` is left as it is), or InputError
    where ONNX's version converter cannot take it there."""
    current = model.opset_imports.get("", 0)
    if current >= opset:
        return model
    proto = ir.serde.serialize_model(model)
    try:
        proto = onnx.version_converter.convert_version(proto, opset)
    except Exception as error:  # the converter raises bare RuntimeErrors from C++
        raise InputError(f"could not upgrade the model from opset {current} to {opset} "
                         f"({str(error).splitlines()[0]}); re-export it at opset {opset}, or choose --target ort "
                         "(its block operators need no upgrade)") from None
    _raise_ir_version(proto)
    return ir.serde.deserialize_model(proto)

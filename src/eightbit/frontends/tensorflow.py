"""TensorFlow models in: a frozen GraphDef (.pb), a SavedModel folder, or a .tflite file, converted to ONNX by
tf2onnx; what comes out is quantized as any ONNX model.

TensorFlow and tf2onnx are imported only when such a model is given (pip install 'eightbit[tf]'). A frozen
graph names no inputs or outputs: they are given (--inputs, --outputs, as TensorFlow's own tools took them),
or else its placeholders and the tensors no node reads. A SavedModel and a .tflite file name their own. The
ONNX model's inputs and outputs take TensorFlow's tensor names without the ":0" (x:0 -> x), so calibration
samples are keyed as the TensorFlow model names its inputs. Layouts stay TensorFlow's (NHWC images).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path

import onnx_ir as ir

from eightbit.errors import InputError, first_line

# The opset tf2onnx writes; every op the passes know exists in it.
EXPORT_OPSET = 17
SUFFIXES = (".pb", ".tflite")
# Ops whose outputs are no model output even where nothing reads them.
_NOT_OUTPUTS = ("NoOp", "Const", "Assert", "Placeholder", "VarHandleOp", "SaveV2", "RestoreV2")


@dataclasses.dataclass(frozen=True)
class TensorNames:
    """The inputs and outputs of a frozen graph, as its ops name them (":0" optional); empty: found."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


# No names given: a frozen graph's are found in it.
FOUND = TensorNames()


def is_tensorflow_path(model: object) -> bool:
    """Whether `model` names a TensorFlow model: a .pb or .tflite file, or a folder holding saved_model.pb."""
    if not isinstance(model, (str, os.PathLike)):
        return False
    path = Path(model)
    return path.suffix in SUFFIXES or (path.is_dir() and (path / "saved_model.pb").is_file())


def _modules():
    """tensorflow and tf2onnx, quiet, or InputError naming the extra that installs them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up notices
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError:
        raise InputError("a TensorFlow model (.pb, SavedModel, .tflite) needs TensorFlow and tf2onnx: "
                         "pip install 'eightbit[tf]'") from None
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)
    return tf, tf2onnx


def _tensor(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _found_names(graph_def) -> TensorNames:
    """A frozen graph's placeholders, and the outputs of the ops no op reads."""
    read = {source.lstrip("^").split(":")[0] for node in graph_def.node for source in node.input}
    inputs = tuple(node.name for node in graph_def.node if node.op == "Placeholder")
    outputs = tuple(node.name for node in graph_def.node if node.name not in read and node.op not in _NOT_OUTPUTS)
    return TensorNames(inputs, outputs)


def _checked_names(graph_def, asked: TensorNames, path: Path) -> TensorNames:
    """The names asked, each checked to be an op of the graph (else InputError listing what there is), or
    those found where none is asked."""
    found = _found_names(graph_def)
    names = TensorNames(asked.inputs or found.inputs, asked.outputs or found.outputs)
    ops = {node.name for node in graph_def.node}
    unknown = [name for name in (*names.inputs, *names.outputs) if name.split(":")[0] not in ops]
    if unknown:
        raise InputError(f"{path}: no op named {', '.join(unknown)}; its placeholders are "
                         f"{', '.join(found.inputs) or 'none'} and its unread ops {', '.join(found.outputs[:5])}")
    if not names.inputs or not names.outputs:
        raise InputError(f"{path}: name its inputs and outputs: --inputs NAME --outputs NAME")
    return names


def _frozen_graph(tf, tf2onnx, path: Path, names: TensorNames):
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as error:  # protobuf's DecodeError, or a file that is no GraphDef at all
        raise InputError(f"{path}: not a frozen TensorFlow GraphDef ({first_line(error)})") from None
    names = _checked_names(graph_def, names, path)
    proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[_tensor(n) for n in names.inputs],
                                              output_names=[_tensor(n) for n in names.outputs], opset=EXPORT_OPSET)
    return proto


def _saved_model(tf2onnx, path: Path):
    graph_def, inputs, outputs, renames = tf2onnx.tf_loader.from_saved_model(
        str(path), None, None, return_tensors_to_rename=True)
    proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                              tensors_to_rename=renames, opset=EXPORT_OPSET)
    return proto


def _converted(tf, tf2onnx, path: Path, names: TensorNames):
    """The ONNX proto of the model at `path`, by its kind."""
    if path.suffix == ".tflite":
        return tf2onnx.convert.from_tflite(str(path), opset=EXPORT_OPSET)[0]
    if path.is_dir():
        return _saved_model(tf2onnx, path)
    return _frozen_graph(tf, tf2onnx, path, names)


def _plain_names(model: ir.Model) -> None:
    """Graph inputs and outputs named x:0 become x, where no other value has that name."""
    taken = {value.name for node in model.graph for value in node.outputs} | {v.name for v in model.graph.inputs}
    for value in [*model.graph.inputs, *model.graph.outputs]:
        plain = value.name[:-2] if value.name.endswith(":0") else value.name
        if plain != value.name and plain not in taken:
            taken.add(plain)
            value.name = plain


def from_tensorflow(model: str | os.PathLike, names: TensorNames = FOUND) -> ir.Model:
    """The ONNX model tf2onnx converts the TensorFlow model at `model` to, or InputError naming what failed."""
    path = Path(model)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    tf, tf2onnx = _modules()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the converters' deprecation notices; the model is checked on load
            proto = _converted(tf, tf2onnx, path, names)
    except InputError:
        raise
    except Exception as error:  # tf2onnx and TensorFlow raise many kinds; each means this model did not convert
        raise InputError(f"{path}: tf2onnx could not convert it ({first_line(error)})") from None
    converted = ir.serde.deserialize_model(proto)
    _plain_names(converted)
    return converted

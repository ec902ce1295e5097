"""ONNX Runtime sessions: the only module that imports onnxruntime."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx.checker
import onnx_ir as ir
import onnxruntime as ort
import onnxruntime.capi.onnxruntime_pybind11_state as _state
from google.protobuf.message import EncodeError

from eightbit.config import DEFAULT_THREADS
from eightbit.errors import InputError, first_line
from eightbit.ir import model_to_bytes, save_model

_PROTOBUF_LIMIT = 2**31 - 1
_LEVELS = {
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    # QDQ groups become integer kernels at this level; "all" adds layout changes.
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def runtime_version() -> str:
    return ort.__version__


class OrtSession:
    """A CPU inference session on an onnx_ir model, a serialized model or an .onnx path, threads fixed for
    repeatability.

    Its threads sleep between runs instead of spinning. ONNX Runtime's default spin-wait makes a
    lone session a little faster (squeezenet: 4.5 vs 5.4 ms), but in a process that holds
    several, as every side-by-side timing does, the idle sessions' spinning threads take the
    cores from the one running: measured in turn, squeezenet's float model took 13-16 ms with
    spinning and 4.8 ms without, and the ratios of the two models changed with their order.
    """

    def __init__(
        self,
        model: ir.Model | bytes | str | os.PathLike,
        threads: int = DEFAULT_THREADS,
        optimize: str = "all",
        optimized_model_path: str | os.PathLike | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # fatal only: a failed run is reported once, as an InputError
        options.graph_optimization_level = _LEVELS[optimize]
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if optimized_model_path is not None:
            options.optimized_model_filepath = os.fspath(optimized_model_path)
        self._scratch: tempfile.TemporaryDirectory | None = None
        source: bytes | str
        if isinstance(model, ir.Model):
            source = serialized(model)
            if source is None:  # above protobuf's 2 GiB: through a file with external data
                self._scratch = tempfile.TemporaryDirectory(prefix="eightbit-")
                source = os.fspath(save_model(model, Path(self._scratch.name) / "model.onnx"))
        elif isinstance(model, bytes):
            source = model
        else:
            source = os.fspath(model)
        try:
            self._session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own exception types for bad graphs
            first = first_line(error)
            raise InputError(f"ONNX Runtime cannot load the model: {first}") from None
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.input_names = [i.name for i in self._session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """The named outputs (all by default) on `feeds`. A run that ONNX Runtime refuses for what it was given
        (an id outside the table a Gather reads, a shape a Reshape cannot take) is the data's to fix: an
        InputError with ONNX Runtime's reason."""
        names = outputs or self.output_names
        try:
            results = self._session.run(names, feeds)
        except (_state.InvalidArgument, _state.Fail, _state.RuntimeException) as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            reason = lines[0] if lines else type(error).__name__
            raise InputError(f"ONNX Runtime could not run the model on the samples given: {reason}; check the "
                             "data (its shapes, and ids within the tables the model reads)") from None
        return dict(zip(names, results))

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


class UnloadableOutput(RuntimeError):
    """A model eightbit made fails the ONNX checker or does not open in ONNX Runtime: a bug, not the input's."""


def check_loads(path: Path) -> None:
    """The model file at `path` passes the ONNX checker and opens in ONNX Runtime, or UnloadableOutput: what
    quantize checks before its output replaces anything at -o."""
    try:
        onnx.checker.check_model(os.fspath(path))
    except onnx.checker.ValidationError as error:
        first = first_line(error, "invalid model")
        raise UnloadableOutput(f"the model made fails the ONNX checker ({first}); nothing was written") from None
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # opening is the check
    try:
        ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own exception types for bad graphs
        first = first_line(error)
        raise UnloadableOutput(f"ONNX Runtime cannot open the model made ({first}); nothing was written") from None


def serialized(model: ir.Model) -> bytes | None:
    """`model`'s bytes, or None where it is above protobuf's 2 GiB (such a model goes through a file)."""
    try:
        source = model_to_bytes(model)
    except (ValueError, EncodeError):
        return None
    return source if len(source) < _PROTOBUF_LIMIT else None


@contextlib.contextmanager
def with_outputs(model: ir.Model, values: list[ir.Value]) -> Iterator[ir.Model]:
    """`model` with `values` among its graph's outputs for the block, as it was after."""
    outputs = model.graph.outputs
    added = [v for v in values if v not in outputs]
    outputs.extend(added)
    try:
        yield model
    finally:
        for _ in added:
            outputs.pop()


def session_with_outputs(model: ir.Model, values: list[ir.Value], threads: int = DEFAULT_THREADS,
                         optimize: str = "all") -> OrtSession:
    """A session on `model` whose graph also outputs `values`; the model is left as it was."""
    with with_outputs(model, values):
        return OrtSession(model, threads=threads, optimize=optimize)


def _zeros_for(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
        dtype = np.dtype(arg.type[len("tensor("):-1].replace("float", "float32").replace("double", "float64")
                         .replace("float3232", "float32"))
        feeds[arg.name] = np.zeros(shape, dtype=dtype)
    return feeds


_INTEGER_KERNEL = re.compile(r"^(QLinear|QGemm|QAttention|QEmbed|DynamicQuantize(?!Linear))|Integer")


def is_integer_kernel(op_type: str) -> bool:
    """Whether an ONNX Runtime kernel of this op type computes on integer codes (QLinearConv, QGemm,
    MatMulInteger ...), as a profile names it."""
    return bool(_INTEGER_KERNEL.search(op_type))


@dataclasses.dataclass(frozen=True)
class KernelTime:
    """One kernel ONNX Runtime ran (after its fusions and layout changes), with its median time per run."""

    name: str
    op_type: str
    microseconds: float
    input_types: tuple[str, ...]  # element type of each input, "" where the profile names none
    input_shapes: tuple[tuple[int, ...], ...]


def profile_kernels(model: ir.Model | str | os.PathLike, feeds: dict[str, np.ndarray] | None = None, runs: int = 1,
                    threads: int = DEFAULT_THREADS) -> list[KernelTime]:
    """Every kernel ONNX Runtime executes for `model`, in execution order, from its profiler.

    `feeds` default to zeros of the inputs' shapes (free dimensions 1). The optimized-model file
    ONNX Runtime can write is not always loadable; the profile always reflects what executed.
    """
    with tempfile.TemporaryDirectory(prefix="eightbit-") as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = model_to_bytes(model) if isinstance(model, ir.Model) else os.fspath(model)
        try:
            session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own exception types for bad graphs
            first = first_line(error)
            raise InputError(f"ONNX Runtime cannot load the model: {first}") from None
        feeds = feeds if feeds is not None else _zeros_for(session)
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = {}
    details: dict[str, tuple[str, tuple, tuple]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        inputs = [next(iter(item.items())) for item in args.get("input_type_shape", []) if item]
        durations.setdefault(name, []).append(float(event.get("dur", 0)))
        details[name] = (args.get("op_name", "?"), tuple(t for t, _ in inputs), tuple(tuple(s) for _, s in inputs))
    return [KernelTime(name[: -len("_kernel_time")], details[name][0], float(np.median(times)), details[name][1],
                       details[name][2]) for name, times in durations.items()]


def executed_op_types(model: ir.Model, threads: int = DEFAULT_THREADS) -> dict[str, int]:
    """Kernels ONNX Runtime runs for `model` after all its fusions, counted by op type (one run on zeros)."""
    counts: dict[str, int] = {}
    for kernel in profile_kernels(model, threads=threads):
        counts[kernel.op_type] = counts.get(kernel.op_type, 0) + 1
    return counts

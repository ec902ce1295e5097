"""Why an int8 model is (or is not) faster than its float original here, in one screen.

Four things decide it, and each is read, not assumed:
- the CPU: which int8 instructions it has, and so the most int8 can gain (eightbit.isa);
- where ONNX Runtime's time goes: its profiler times every kernel it runs after its fusions,
  and each kernel is one of: an integer kernel (QLinearConv, QGemm, ...), a data-movement op on
  codes, a conversion (QuantizeLinear / DequantizeLinear that stayed: a float round trip), or
  a float op;
- which nodes stayed float and why (the model's `eightbit.float_nodes` metadata), and which of
  those ONNX Runtime runs as integer kernels all the same;
- how big the kernels are: with small tensors, a run is mostly per-kernel overhead, which int8
  does not shrink.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import KernelTime, is_integer_kernel, profile_kernels
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import input_specs
from eightbit.errors import InputError
from eightbit.frontends import converted_file
from eightbit.ir import load_model
from eightbit.isa import cpu_features
from eightbit.measure.latency import interleaved
from eightbit.metadata import FLOAT_NODES_KEY
from eightbit.never_slower import SlowerNode, SpeedCheck, integer_kernel_nodes, kernel_base_name, slower_in_int8
from eightbit.plan import FloatNode
from eightbit.record import float_nodes_of, speed_check_of

_CONVERSIONS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
_CODES = ("uint8", "int8")
KINDS = ("integer kernels", "codes moved", "float round trips", "float ops")


def kernel_kind(kernel: KernelTime) -> str:
    if kernel.op_type in _CONVERSIONS:
        return "float round trips"
    if is_integer_kernel(kernel.op_type):
        return "integer kernels"
    if kernel.input_types and kernel.input_types[0] in _CODES:
        return "codes moved"
    return "float ops"


@dataclasses.dataclass
class RoundTrip:
    """Q/DQ kernels that stayed, grouped by the float op they surround."""

    around: str
    kernels: int = 0
    microseconds: float = 0.0


@dataclasses.dataclass
class Explanation:
    cpu: str
    limit: str
    why_limit: str
    kernels: list[KernelTime]
    by_kind: dict[str, tuple[int, float]]  # kind -> (kernels, microseconds per run)
    round_trips: list[RoundTrip]
    float_nodes: list[FloatNode]  # as the quantizer recorded them
    integer_anyway: list[str]  # of those, the ones the profile shows running as integer kernels
    made_by_eightbit: bool
    inputs: str  # what the profile was fed
    float_ms: float | None = None  # wall medians, when the float model is given
    int8_ms: float | None = None
    float_kernel_microseconds: float | None = None  # the float model's kernel time per run, when given
    slower: list[SlowerNode] = dataclasses.field(default_factory=list)  # nodes slower in int8, when float is given
    speed_check: SpeedCheck | None = None  # what quantize's speed check decided, where it ran

    @property
    def total_microseconds(self) -> float:
        return sum(us for _, us in self.by_kind.values())

    def top(self, count: int) -> list[KernelTime]:
        return sorted(self.kernels, key=lambda k: -k.microseconds)[:count]

    def verdict(self) -> list[str]:
        """One line per finding: the speed, the CPU's limit, then where int8 time went that int8 cannot save."""
        lines = []
        total = self.total_microseconds or 1.0
        if self.float_ms is not None:
            ratio = self.float_ms / self.int8_ms
            lines.append(f"int8 runs in {self.int8_ms:.2f} ms, float in {self.float_ms:.2f} ms: {ratio:.2f}x "
                         f"(wall-clock medians, taken in turn); kernel time {total / 1e3:.2f} ms vs "
                         f"{self.float_kernel_microseconds / 1e3:.2f} ms")
        lines.append(f"this CPU's int8 limit is {self.limit} fp32's multiply-accumulate rate: {self.why_limit}")
        trips, trip_us = self.by_kind["float round trips"]
        if trips:
            around = ", ".join(f"{t.around} ({t.kernels})" for t in self.round_trips[:4])
            lines.append(f"{trips} Quantize/Dequantize kernels stayed (float round trips): {trip_us / 1e3:.2f} ms, "
                         f"{trip_us / total:.0%} of kernel time; around {around}")
        floats, float_us = self.by_kind["float ops"]
        if floats:
            ops = Counter(k.op_type for k in self.kernels if kernel_kind(k) == "float ops")
            lines.append(f"{floats} float kernels: {float_us / 1e3:.2f} ms ({float_us / total:.0%}): "
                         + ", ".join(f"{op} ({n})" for op, n in ops.most_common(5)))
        if self.integer_anyway:
            shown = ", ".join(self.integer_anyway[:4]) + (
                f" and {len(self.integer_anyway) - 4} more" if len(self.integer_anyway) > 4 else "")
            lines.append(f"{len(self.integer_anyway)} of the nodes the model lists as float run as integer kernels: "
                         f"{shown} (ONNX Runtime fuses a float node between two grids, quantizing a float weight "
                         "itself, one scale per tensor; quantize again to have them planned integer)")
        if self.slower:
            shown = ", ".join(f"{n.name} ({n.op_type} {n.int8_us:.0f} vs {n.float_us:.0f} us)" for n in self.slower[:4])
            lines.append(f"{len(self.slower)} nodes run slower in int8 than in float: {shown}"
                         + (f" and {len(self.slower) - 4} more" if len(self.slower) > 4 else ""))
        if self.speed_check is not None and self.speed_check.slower:
            lines.append(f"when quantized, {self.speed_check.summary()}")
        moved, moved_us = self.by_kind["codes moved"]
        if moved and moved_us / total > 0.1:
            lines.append(f"{moved} data-movement kernels on codes take {moved_us / total:.0%} of kernel time "
                         "(layout transposes ONNX Runtime inserts for channels-last integer convolutions count here)")
        median = float(np.median([k.microseconds for k in self.kernels])) if self.kernels else 0.0
        if median < 20:
            lines.append(f"{len(self.kernels)} kernels, median {median:.0f} us each: small kernels, where a run's "
                         "fixed cost per kernel weighs as much as its arithmetic and int8 cannot shrink it")
        return lines

    def as_dict(self) -> dict:
        return {
            "cpu": self.cpu, "int8_limit": self.limit, "why": self.why_limit, "inputs": self.inputs,
            "kernel_time_us": {kind: {"kernels": n, "microseconds": round(us, 1)} for kind, (n, us)
                               in self.by_kind.items()},
            "round_trips": [dataclasses.asdict(t) for t in self.round_trips],
            "float_nodes": [dataclasses.asdict(f) for f in self.float_nodes], "integer_anyway": self.integer_anyway,
            "made_by_eightbit": self.made_by_eightbit,
            "float_ms": self.float_ms, "int8_ms": self.int8_ms,
            "float_kernel_us": self.float_kernel_microseconds,
            "slower_in_int8": [dataclasses.asdict(node) for node in self.slower],
            "speed_check": self.speed_check.as_dict() if self.speed_check is not None else None,
            "top_kernels": [{"name": k.name, "op_type": k.op_type, "microseconds": k.microseconds,
                             "kind": kernel_kind(k)} for k in self.top(25)],
            "verdict": self.verdict(),
        }


def _round_trips(kernels: list[KernelTime], model: ir.Model) -> list[RoundTrip]:
    nodes = {node.name: node for node in model.graph if node.name}
    trips: dict[str, RoundTrip] = {}
    for kernel in kernels:
        if kernel.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        node = nodes.get(kernel_base_name(kernel.name))
        around = "?"
        if node is not None and kernel.op_type == "DequantizeLinear":
            if node.outputs[0].is_graph_output():
                around = "the model's outputs"
            else:
                readers = sorted({use.node.op_type for use in node.outputs[0].uses()})
                around = "/".join(readers) or "?"
        elif node is not None:
            producer = node.inputs[0].producer()
            around = "the model's inputs" if producer is None else producer.op_type
        trip = trips.setdefault(around, RoundTrip(around))
        trip.kernels += 1
        trip.microseconds += kernel.microseconds
    return sorted(trips.values(), key=lambda t: -t.microseconds)


def explain(
    int8_path: str | os.PathLike,
    float_path: str | os.PathLike | None = None,
    feeds: dict[str, np.ndarray] | None = None,
    runs: int = 20,
    threads: int = DEFAULT_THREADS,
) -> Explanation:
    """Profile `int8_path` (and `float_path`, if given: an ONNX file, or a .pt2 program exported to ONNX as
    quantize does) in ONNX Runtime and say where the time goes."""
    from eightbit.backends import OrtSession

    model = load_model(int8_path)
    given = feeds is not None
    feeds = feeds if given else zeros_for(model)
    kernels = profile_kernels(int8_path, feeds, runs=runs, threads=threads)
    by_kind = {kind: (0, 0.0) for kind in KINDS}
    for kernel in kernels:
        count, total = by_kind[kernel_kind(kernel)]
        by_kind[kernel_kind(kernel)] = (count + 1, total + kernel.microseconds)
    limit, why = cpu_features().int8_outlook()
    float_nodes = float_nodes_of(model)
    result = Explanation(
        cpu=cpu_features().summary(), limit=limit, why_limit=why, kernels=kernels, by_kind=by_kind,
        round_trips=_round_trips(kernels, model), float_nodes=float_nodes,
        integer_anyway=integer_kernel_nodes(model, kernels, [node.name for node in float_nodes]),
        made_by_eightbit=FLOAT_NODES_KEY in model.metadata_props,
        inputs="the samples given" if given else "zeros (free dimensions 1)", speed_check=speed_check_of(model),
    )
    if float_path is not None:
        # A file ONNX Runtime reads as it is, or the ONNX model a PyTorch or TensorFlow model converts to.
        source = converted_file(float_path)
        float_model = source if isinstance(source, ir.Model) else load_model(source)
        float_kernels = profile_kernels(source, feeds, runs=runs, threads=threads)
        result.float_kernel_microseconds = sum(kernel.microseconds for kernel in float_kernels)
        float_session, int8_session = OrtSession(source, threads=threads), OrtSession(int8_path, threads=threads)
        latency = interleaved(lambda: float_session.run(feeds), lambda: int8_session.run(feeds))
        result.float_ms, result.int8_ms = latency.first_ms, latency.second_ms
        result.slower = slower_in_int8(model, float_model, feeds, threads, runs=runs,
                                       profiles=(kernels, float_kernels))
    return result


def zeros_for(model: ir.Model) -> dict[str, np.ndarray]:
    """Zeros of each input's shape, batch 1: enough to time a model whose speed does not depend on values.

    A free dimension other than the first (an image's height or width, a sequence's length) has
    no size to assume: that model needs a real sample.
    """
    feeds = {}
    for spec in input_specs(model):
        free = [i for i, d in enumerate(spec.shape) if not isinstance(d, int) and i > 0]
        if free:
            shown = "[" + ", ".join(str(d) if isinstance(d, int) else "?" for d in spec.shape) + "]"
            raise InputError(f"input {spec.name!r} has free dimensions beyond the batch ({shown}): pass --data "
                             "with a sample of the size you run")
        feeds[spec.name] = np.zeros([d if isinstance(d, int) else 1 for d in spec.shape], spec.dtype)
    return feeds

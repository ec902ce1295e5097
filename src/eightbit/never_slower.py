"""Keeping float the nodes this machine runs slower in int8 than in float, where that makes the whole
model faster (docs/quantization.md, section 11c).

ONNX Runtime's profiler times every kernel it runs; each kernel of the int8 model and of the float
model is traced back to the node it computes (node_times), so one node's integer kernel can be set
beside its float kernel. A node whose integer kernel is slower by SLOWER_FACTOR, and by at least
SLOWER_MICROSECONDS, is a candidate. Keeping a node float is not free: its inputs are dequantized, its
output quantized again, and the channels-last chain of integer kernels ONNX Runtime builds is broken
around it. So the candidates are kept float only where the whole model, timed beside the all-integer
one in alternating blocks, is at least GAIN faster.

For OpenVINO (--target openvino) its profiles are read instead: it fuses nodes into layers, and the
nodes that share a layer in either model are compared as one group (openvino_slower).
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import KernelTime, OrtSession, is_integer_kernel, profile_kernels
from eightbit.backends.openvino import OpenVinoSession, profile_layers
from eightbit.ir import save_model
from eightbit.measure.latency import LatencyPair, interleaved
from eightbit.plan.ops import OP_RULES, OutputRange

# A candidate's integer kernel takes at least this many times its float kernel's time, and at least
# this many microseconds more: below that, a profile's noise decides.
SLOWER_FACTOR = 1.2
SLOWER_MICROSECONDS = 20.0
# The candidates are kept float when the model runs at least this much faster with them float, and saves at
# least LEAST_SAVING_MS a run (on a model of a tenth of a millisecond, 3% is timer noise).
GAIN = 0.03
LEAST_SAVING_MS = 0.05
# Profiled runs per model (medians per kernel).
PROFILED_RUNS = 20

# Float activations ONNX Runtime folds into the convolution before them (its FusedConv and
# channels-blocked Conv name the fused kernel after the activation's output).
_FUSED_INTO_CONVOLUTION = frozenset({"Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh"})
_KERNEL_SUFFIXES = re.compile(r"(_token_\d+|_nchwc)+$")


def kernel_base_name(kernel_name: str) -> str:
    """An ONNX Runtime kernel's name without the suffixes the runtime adds while changing layouts."""
    return _KERNEL_SUFFIXES.sub("", kernel_name)


class KernelNodes:
    """Which node of a model each ONNX Runtime kernel computes.

    Kernels keep their node's name, with suffixes where the runtime changed the layout; a kernel of
    ONNX Runtime's channels-blocked layout is named after the value it writes instead, and where that
    value is an activation fused into a convolution, the kernel is the convolution's.
    """

    def __init__(self, model: ir.Model):
        self.by_name = {node.name: node for node in model.graph if node.name}
        self.writers = {output.name: node for node in model.graph for output in node.outputs}

    def __call__(self, kernel_name: str) -> ir.Node | None:
        """The node, or None for a kernel the runtime added (a layout reorder or transpose)."""
        name = kernel_base_name(kernel_name)
        if name in self.by_name:
            return self.by_name[name]
        node = self.writers.get(name)
        if node is None:
            return None
        source = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
        if node.op_type in _FUSED_INTO_CONVOLUTION and source is not None and source.op_type == "Conv":
            return source
        return node


def node_times(model: ir.Model, feeds: dict[str, np.ndarray], threads: int,
               runs: int = PROFILED_RUNS, kernels: list[KernelTime] | None = None) -> dict[str, float]:
    """Median microseconds per run of each node of `model` in ONNX Runtime (its kernels summed), from its
    profile `kernels` where the caller has it, else profiled here."""
    nodes = KernelNodes(model)
    times: dict[str, float] = {}
    if kernels is None:
        kernels = profile_kernels(model, feeds, runs=runs, threads=threads)
    for kernel in kernels:
        node = nodes(kernel.name)
        if node is not None and node.name:
            times[node.name] = times.get(node.name, 0.0) + kernel.microseconds
    return times


@dataclasses.dataclass(frozen=True)
class SlowerNode:
    """A node whose integer kernel ran slower than its float kernel (median microseconds per run); in OpenVINO,
    which fuses nodes into layers, a group of nodes."""

    name: str
    op_type: str
    int8_us: float
    float_us: float
    also: tuple[str, ...] = ()  # nodes the runtime computes together with it (its times are theirs too)

    @property
    def can_stay_float(self) -> bool:
        """Whether keeping it float makes the runtime run it in float. An op that moves codes (Resize,
        MaxPool, Transpose ...) reads and writes one grid, and ONNX Runtime runs DequantizeLinear -> op ->
        QuantizeLinear on one grid as the op on the codes again; such ops are not kept float for either
        target."""
        rule = OP_RULES.get(self.op_type)
        return rule is None or rule.output is not OutputRange.SAME_AS_INPUT


def run_as_integer(model: ir.Model, names: list[str], feeds: dict[str, np.ndarray], threads: int) -> list[str]:
    """Those of the named nodes, float in `model`, that ONNX Runtime runs as integer kernels all the same
    (read from one profiled run). Between a DequantizeLinear and a QuantizeLinear its QDQ rules fuse a node
    into its integer kernel whatever the plan says, and a float Conv, Gemm or ConvTranspose weight found there
    it quantizes itself (symmetric, one scale for the whole tensor) to fuse that too."""
    return integer_kernel_nodes(model, profile_kernels(model, feeds, runs=1, threads=threads), names)


def integer_kernel_nodes(model: ir.Model, kernels: list[KernelTime], names: list[str]) -> list[str]:
    """Those of the named nodes of `model` that one of `kernels` (its profile) computes as an integer kernel."""
    wanted = set(names)
    nodes = KernelNodes(model)
    fused = []
    for kernel in kernels:
        node = nodes(kernel.name)
        if node is not None and node.name in wanted and is_integer_kernel(kernel.op_type) and node.name not in fused:
            fused.append(node.name)
    return fused


RUNTIMES = {"ort": "ONNX Runtime", "openvino": "OpenVINO"}
_CONVERSIONS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _in_files(models: list[ir.Model], folder: str) -> list[Path]:
    """OpenVINO reads models from files."""
    paths = [Path(folder) / f"model{index}.onnx" for index in range(len(models))]
    for model, path in zip(models, paths):
        save_model(model, path)
    return paths


def _computed_nodes(names: tuple[str, ...], kinds: dict[str, str]) -> list[str]:
    """The nodes (other than conversions) among the names OpenVINO records for a layer; it names the parts it
    splits a node into after the node ("conv/WithoutBiases", "fc/WithoutBiases/DequantizationMultiply")."""
    found = []
    for name in names:
        while name not in kinds and "/" in name:
            name = name.rsplit("/", 1)[0]
        if name in kinds and kinds[name] not in _CONVERSIONS and name not in found:
            found.append(name)
    return found


def openvino_slower(quantized: ir.Model, reference: ir.Model, feeds: dict[str, np.ndarray], threads: int,
                    runs: int = PROFILED_RUNS) -> list[tuple[list[str], float, float]]:
    """Groups of nodes with their OpenVINO time in int8 and in float (median microseconds per run).

    OpenVINO fuses nodes into layers, differently in the float and the int8 model, and records which
    nodes each layer computes. Nodes that share a layer in either model form one group; conversions
    (a zero point subtracted in float, say) are charged to no group."""
    int8_kinds = {node.name: node.op_type for node in quantized.graph if node.name}
    float_kinds = {node.name: node.op_type for node in reference.graph if node.name}
    with tempfile.TemporaryDirectory(prefix="eightbit-") as folder:
        int8_path, float_path = _in_files([quantized, reference], folder)
        layers = [(_computed_nodes(names, int8_kinds), us, 0.0)
                  for names, us in profile_layers(int8_path, feeds, runs, threads).items()]
        layers += [(_computed_nodes(names, float_kinds), 0.0, us)
                   for names, us in profile_layers(float_path, feeds, runs, threads).items()]
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for names, _, _ in layers:
        for name in names[1:]:
            parent[root(name)] = root(names[0])
    # A node OpenVINO names in one model only (a MatMul whose float layer carries only its bias Add's name)
    # joins the group of a neighbour (in the float graph) that is named in the other model only.
    int8_named = {name for names, int8_us, _ in layers if int8_us for name in names}
    float_named = {name for names, _, float_us in layers if float_us for name in names}
    for node in reference.graph:
        neighbours = [use.node for value in node.outputs for use in value.uses()]
        for other in neighbours:
            one_sided = {node.name, other.name} & (int8_named - float_named)
            other_sided = {node.name, other.name} & (float_named - int8_named)
            if one_sided and other_sided:
                parent[root(node.name)] = root(other.name)
    groups: dict[str, tuple[list[str], float, float]] = {}
    for names, int8_us, float_us in layers:
        if names:
            members, int8_total, float_total = groups.get(root(names[0]), ([], 0.0, 0.0))
            members = members + [name for name in names if name not in members]
            groups[root(names[0])] = (members, int8_total + int8_us, float_total + float_us)
    return list(groups.values())


def slower_in_int8(quantized: ir.Model, reference: ir.Model, feeds: dict[str, np.ndarray], threads: int,
                   runs: int = PROFILED_RUNS, target: str = "ort",
                   profiles: tuple[list[KernelTime], list[KernelTime]] | None = None) -> list[SlowerNode]:
    """The nodes of `quantized` that run slower than the same nodes of its float `reference` (names
    shared) in the `target` runtime, slowest first. Kernels only the int8 model has (conversions, layout
    transposes) are not charged to any node: the whole-model timing that follows counts them. `profiles`:
    the two models' ONNX Runtime kernel profiles (int8, float), where the caller has them."""
    kinds = {node.name: node.op_type for node in quantized.graph}
    if target == "openvino":
        timed = [(names, int8_us, float_us) for names, int8_us, float_us
                 in openvino_slower(quantized, reference, feeds, threads, runs) if int8_us and float_us]
    else:
        int8_kernels, float_kernels = profiles if profiles is not None else (None, None)
        int8 = node_times(quantized, feeds, threads, runs, int8_kernels)
        floats = node_times(reference, feeds, threads, runs, float_kernels)
        timed = [([name], us, floats[name]) for name, us in int8.items() if name in floats]
    slower = [SlowerNode(names[0], kinds.get(names[0], "?"), round(int8_us, 1), round(float_us, 1),
                         tuple(name for name in names[1:] if name in kinds))
              for names, int8_us, float_us in timed
              if int8_us >= float_us * SLOWER_FACTOR and int8_us - float_us >= SLOWER_MICROSECONDS]
    return sorted(slower, key=lambda node: node.float_us - node.int8_us)


def latency_side_by_side(first: ir.Model, second: ir.Model, feeds: dict[str, np.ndarray], threads: int,
                         target: str = "ort") -> LatencyPair:
    """Median latency (ms) of two models in the `target` runtime, timed in alternating blocks."""
    with tempfile.TemporaryDirectory(prefix="eightbit-") as folder:
        if target == "openvino":
            sessions = [OpenVinoSession(path, threads=threads) for path in _in_files([first, second], folder)]
        else:
            sessions = [OrtSession(model, threads=threads) for model in (first, second)]
        latency = interleaved(lambda: sessions[0].run(feeds), lambda: sessions[1].run(feeds), rounds=10)
        for session in sessions:
            session.close()
    return latency


@dataclasses.dataclass
class SpeedCheck:
    """What the check found and decided: the slower nodes, the whole model's latency (ms, medians)
    all-integer and with those that can stay float float, and whether they were kept float. `fused_anyway`:
    slower nodes that the runtime ran as integer kernels when left float (run_as_integer)."""

    slower: list[SlowerNode]
    int8_ms: float | None = None
    with_float_ms: float | None = None
    taken: bool = False
    target: str = "ort"
    fused_anyway: tuple[str, ...] = ()

    @property
    def candidates(self) -> list[SlowerNode]:
        return [node for node in self.slower if node.can_stay_float and node.name not in self.fused_anyway]

    def summary(self) -> str:
        if not self.slower:
            return f"speed check: no node runs slower in int8 than in float here ({RUNTIMES[self.target]} profile)"
        shown = ", ".join(f"{node.name} ({node.op_type}, {node.int8_us:.0f} vs {node.float_us:.0f} us)"
                          for node in self.slower[:4])
        more = f" and {len(self.slower) - 4} more" if len(self.slower) > 4 else ""
        found = (f"speed check: {len(self.slower)} nodes slower in int8 than in float here in {RUNTIMES[self.target]}: "
                 f"{shown}{more}")
        stay = sum(not node.can_stay_float for node in self.slower)
        if stay:
            found += f" ({stay} of them move codes, which the runtime keeps on codes)"
        if self.fused_anyway:
            found += (f"; {RUNTIMES[self.target]} runs {len(self.fused_anyway)} of them as integer kernels even when "
                      f"left float between two grids ({', '.join(self.fused_anyway[:4])}"
                      f"{' ...' if len(self.fused_anyway) > 4 else ''}): kept integer")
        if not self.candidates:
            return found
        which = "them" if len(self.candidates) == len(self.slower) else f"the other {len(self.candidates)}"
        timed = f"the model with {which} float ran {self.with_float_ms:.2f} ms, all-integer {self.int8_ms:.2f} ms"
        if self.taken:
            return f"{found}; {timed}: kept float"
        return f"{found}; {timed}: kept integer (keeping a node float costs conversions around it)"

    def as_dict(self) -> dict:
        return {"slower": [dataclasses.asdict(node) for node in self.slower], "int8_ms": self.int8_ms,
                "with_float_ms": self.with_float_ms, "taken": self.taken, "target": self.target,
                "fused_anyway": list(self.fused_anyway)}

    @staticmethod
    def from_dict(raw: dict) -> SpeedCheck:
        slower = [SlowerNode(**{**node, "also": tuple(node.get("also", ()))}) for node in raw["slower"]]
        return SpeedCheck(slower, raw["int8_ms"], raw["with_float_ms"],
                          raw["taken"], raw.get("target", "ort"), tuple(raw.get("fused_anyway", ())))

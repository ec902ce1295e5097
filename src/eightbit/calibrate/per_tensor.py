"""Each tensor's calibration method chosen by the output error it causes (`--calibrate auto`;
docs/quantization.md, section 6a).

The methods read one histogram in different ways and none is best for every tensor: min/max keeps
the rare large values a max-pool or a gate passes on, percentile or mse narrow the step of a tensor
whose tails matter little downstream. Which matters is measured on the model's outputs. A probe copy
of the quantized model takes its activation scales and zero points as inputs, so one ONNX Runtime
session computes the outputs for any choice of ranges (float arithmetic between Q/DQ pairs that
round every activation onto its grid, as the integer kernels do). Tensors are visited in graph
order; each takes the method whose range gives the highest worst-output SQNR against the float
model, every other tensor keeping the method chosen so far (coordinate search from min/max).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Collection

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.measure.metrics import Agreement, compared_values
from eightbit.measure.progress import progress_bar
from eightbit.quant.affine import QParams

# Where the search starts, and what a tensor the search has not seen takes.
BASELINE = "minmax"
# A method replaces the one chosen so far only if it raises the worst output SQNR by this much:
# smaller differences are within what another set of samples would move.
LEAST_GAIN_DB = 0.02
# Calibration batches the search measures on.
SEARCH_BATCHES = 8

Range = tuple[float, float]


@dataclasses.dataclass
class PerTensorCalibration:
    """The state of `--calibrate auto` across the models one quantize() call builds: every method's
    range per tensor (from one calibration pass), and the method the search chose for each. Ranges are
    kept by tensor name, so they hold for one float model: a change of the tensors' values under their
    names (equalization) is decided before."""

    candidates: dict[str, dict[str, Range]] = dataclasses.field(default_factory=dict)
    chosen: dict[str, str] = dataclasses.field(default_factory=dict)  # tensor -> method, where not BASELINE
    searched: bool = False
    found: dict[str, str] = dataclasses.field(default_factory=dict)  # what the search chose, even if not kept
    probe_db: tuple[float, float] | None = None  # worst output SQNR in the probe, before and after the search
    checked_db: tuple[float, float] | None = None  # ... of the models built on min/max and on the found methods
    finished_db: tuple[float, float] | None = None  # ... of the finished models (codes, bias correction and all)

    def ranges(self, names: Collection[str]) -> dict[str, Range]:
        return {name: self.candidates[name][self.chosen.get(name, BASELINE)] for name in names}

    def moved(self) -> bool:
        return bool(self.chosen)

    def keep_baseline(self) -> None:
        self.chosen = {}

    def summary(self) -> str:
        """What the search found and what was taken, in words, for the model's notes."""
        counts = collections.Counter(self.found.values())
        found = ", ".join(f"{count} {method}" for method, count in sorted(counts.items())) or "no tensor"
        text = (f"--calibrate auto: {found} better than {BASELINE} in the search ({self.probe_db[0]:.1f} -> "
                f"{self.probe_db[1]:.1f} dB worst output SQNR, {SEARCH_BATCHES} calibration batches)")
        if self.checked_db is None:
            return text
        taken = "taken" if self.moved() else f"{BASELINE} kept"
        text += (f"; built: {self.checked_db[1]:.1f} dB against {self.checked_db[0]:.1f} dB with {BASELINE} "
                 f"ranges on the other batches")
        if self.finished_db is None:
            return f"{text}: {taken}"
        return (f"{text}; finished: {self.finished_db[1]:.1f} dB against {self.finished_db[0]:.1f} dB with "
                f"{BASELINE}: {taken}")


def probe_model(
    quantized: ir.Model, activations: Collection[str],
) -> tuple[ir.Model, dict[str, tuple[ir.Value, ir.Value]]]:
    """A copy of `quantized` whose named activations' QuantizeLinear scales and zero points (shared with
    their DequantizeLinear) are graph inputs; returns it and, per activation, its (scale, zero point) inputs."""
    probe = ir.from_proto(ir.to_proto(quantized))
    wanted = set(activations)
    inputs: dict[str, tuple[ir.Value, ir.Value]] = {}
    for node in probe.graph:
        if node.op_type != "QuantizeLinear" or node.inputs[0].name not in wanted or len(node.inputs) < 3:
            continue
        pair = []
        for value in node.inputs[1:3]:
            if value.name in probe.graph.initializers:
                array = value.const_value.numpy()
                probe.graph.initializers.pop(value.name)
                value.const_value = None
                value.type = ir.TensorType(ir.DataType.from_numpy(array.dtype))
                value.shape = ir.Shape(array.shape)
                probe.graph.inputs.append(value)
            pair.append(value)
        inputs[node.inputs[0].name] = (pair[0], pair[1])
    return probe, inputs


def search_methods(
    state: PerTensorCalibration,
    quantized: ir.Model,
    reference: ir.Model,
    qparams_for: Callable[[dict[str, Range]], dict[str, QParams]],
    batches: list[dict[str, np.ndarray]],
    threads: int,
    show_progress: bool = False,
) -> None:
    """Fill `state.chosen` by coordinate search over the tensors of `quantized` (made with state's ranges)
    that have candidates, in the order of `state.candidates` (the order calibration saw them);
    `qparams_for` maps ranges by tensor name to the (scale, zero point) of every activation grid, shared
    grids included, as the model's rewrite computes them."""
    names = list(state.candidates)
    probe, inputs = probe_model(quantized, qparams_for(state.ranges(names)))
    compared, reference_compared = compared_values(quantized), compared_values(reference)
    probe_values = {value.name: value for value in _values(probe.graph)}
    pairs = [(probe_values[compared[output].name], reference_compared[output]) for output in compared]
    reference_session = session_with_outputs(reference, [expected for _, expected in pairs], threads)
    expected = [reference_session.run(feeds, [value.name for _, value in pairs]) for feeds in batches]
    session = session_with_outputs(probe, [got for got, _ in pairs], threads)

    def grids(methods: dict[str, str]) -> dict[str, np.ndarray]:
        """The probe's scale and zero-point inputs for `methods`."""
        ranges = {name: state.candidates[name][methods.get(name, BASELINE)] for name in names}
        fed = {}
        for name, (scale, zero_point) in qparams_for(ranges).items():
            if name in inputs:
                scale_input, zero_input = inputs[name]
                fed[scale_input.name] = np.asarray(scale, np.float32).reshape(scale_input.shape.numpy())
                fed[zero_input.name] = np.asarray(zero_point).astype(zero_input.dtype.numpy()).reshape(
                    zero_input.shape.numpy())
        return fed

    def worst_db(fed: dict[str, np.ndarray]) -> float:
        agreement = [Agreement() for _ in pairs]
        for feeds, wanted in zip(batches, expected):
            got = session.run({**feeds, **fed}, [value.name for value, _ in pairs])
            for metric, (value, reference_value) in zip(agreement, pairs):
                metric.add(wanted[reference_value.name], got[value.name])
        return min(metric.sqnr_db for metric in agreement)

    current = dict(state.chosen)
    current_grids = grids(current)
    best = first = worst_db(current_grids)
    visited = [name for name in names if len(set(state.candidates[name].values())) > 1]
    for name in progress_bar(visited, len(visited), "choosing calibration per tensor", show_progress):
        tried = [current_grids]
        for method in state.candidates[name]:
            trial = {**current, name: method}
            trial_grids = grids(trial)
            if any(_same(trial_grids, earlier) for earlier in tried):
                continue  # the same grids as a choice already measured
            tried.append(trial_grids)
            db = worst_db(trial_grids)
            if db >= best + LEAST_GAIN_DB:
                best, current, current_grids = db, trial, trial_grids
    state.chosen = {name: method for name, method in current.items() if method != BASELINE}
    state.found = dict(state.chosen)
    state.probe_db = (first, best)
    state.searched = True


def _same(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(first[name], second[name]) for name in first)


def _values(graph: ir.Graph):
    yield from graph.inputs
    for node in graph:
        yield from node.outputs


"""Per-tensor diagnosis of a quantized model against its float original (docs/quantization.md, section 11).

For every activation the quantized model quantizes (a QuantizeLinear on a computed tensor),
named as the float model names it, over the same samples:
- own SQNR: the float tensor quantized and dequantized with the model's scale and zero point,
  vs the float tensor: the error this tensor's grid alone causes (rounding and clipping);
- channel SQNR: the same for each channel (axis 1), the median over channels: a range that one
  outlier channel dominates leaves every other channel few codes, which the whole-tensor figure,
  dominated by that channel's energy, hides;
- weight SQNR of the layer that produces it (dequantized weights vs the float model's, after
  the same folding), whole and median channel;
- accumulated SQNR: the quantized model's dequantized tensor vs the float tensor, i.e. every
  error upstream included;
- clipped: the fraction of float values beyond the grid's ends (by more than half a step);
a tensor read only by a saturating activation (eq. 8a; a hard-swish in gate form counts) is
measured after that activation, where clipping its inputs past the activation's live range
costs nothing;
- impact (optional): how much the model outputs' SQNR improves when this tensor (with the
  tensors sharing its grid through data movement) is left in float, its QuantizeLinear ->
  DequantizeLinear pair bypassed, everything else quantized.
Rows come worst first: by impact when measured, else by the lowest own figure.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.backends.reference import dequantized_source
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples
from eightbit.errors import InputError
from eightbit.ir import as_model
from eightbit.ir.graph import constant_array
from eightbit.measure.grids import Grid, QuantizedActivation, dequantized_constant, grid_impacts, quantized_activations
from eightbit.measure.metrics import Agreement, compared_values
from eightbit.measure.progress import progress_bar
from eightbit.metadata import BIAS_KEY, EQUALIZATION_KEY
from eightbit.passes.equalize_channels import divided_on_read_channels
from eightbit.pipeline.correct_biases import without_bias_corrections
from eightbit.plan.ops import OP_RULES, weight_axis
from eightbit.prepare import prepare

# Axis of an activation's channels (NCHW, and [N, features] for 2-D tensors).
CHANNEL_AXIS = 1
# A median channel this much below the whole tensor means one channel sets the range.
CHANNEL_GAP_DB = 6.0
# A grid that clips more than this fraction of a tensor's values is worth naming.
CLIPPED_NOTABLE = 0.001


def _db(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """10 log10(signal / noise) elementwise (eq. 14): inf where noise is 0, nan where both are."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(signal / noise)


def median_channel_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """Median over channels of each channel's SQNR; channels that are always zero do not count."""
    live = signal > 0
    if not np.any(live):
        return math.inf
    return float(np.median(_db(signal[live], noise[live])))


@dataclasses.dataclass
class ChannelEnergy:
    """Streaming per-channel sums of reference^2 and error^2."""

    signal: np.ndarray | None = None
    noise: np.ndarray | None = None

    def add(self, reference: np.ndarray, test: np.ndarray, axis: int | None) -> None:
        reference = np.asarray(reference, dtype=np.float64)
        error = reference - np.asarray(test, dtype=np.float64)
        if axis is None or reference.ndim <= axis:
            reference, error, axis = reference.reshape(1, -1), error.reshape(1, -1), 0
        others = tuple(i for i in range(reference.ndim) if i != axis)
        signal, noise = np.sum(reference**2, axis=others), np.sum(error**2, axis=others)
        if self.signal is None:
            self.signal, self.noise = signal, noise
        else:
            self.signal, self.noise = self.signal + signal, self.noise + noise

    @property
    def median_db(self) -> float:
        return math.inf if self.signal is None else median_channel_db(self.signal, self.noise)


def power_of_two_exponent(scale: float) -> int | None:
    """k with scale == 2^k exactly, or None."""
    mantissa, exponent = math.frexp(scale)
    return exponent - 1 if mantissa == 0.5 else None


def _json_number(x: float | None, digits: int = 3) -> float | str | None:
    """A figure for JSON: rounded, or "inf" / "-inf" / "nan" (JSON has no such numbers)."""
    if x is None:
        return None
    return round(x, digits) if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")


@dataclasses.dataclass
class WeightSummary:
    scales: np.ndarray
    sqnr_db: float | None = None  # vs the float model's folded weights, when they can be matched
    channel_sqnr_db: float | None = None


@dataclasses.dataclass
class TensorReport:
    """One quantized activation and the layer that produces it."""

    name: str  # as the float model names it
    depth: int  # order of the QuantizeLinear in the quantized graph
    layer: str  # producing node in the quantized model ("" for a model input)
    op_type: str
    grid: Grid
    input_scales: list[float]
    weights: WeightSummary | None
    bias_bits: int | None
    bias_saturated: int | None
    in_float_model: bool
    read_through: str | None = None  # measured after this saturating activation, its only reader
    low: float = math.inf
    high: float = -math.inf
    clipped: int = 0
    count: int = 0
    own: Agreement = dataclasses.field(default_factory=Agreement)
    own_channels: ChannelEnergy = dataclasses.field(default_factory=ChannelEnergy)
    accumulated: Agreement = dataclasses.field(default_factory=Agreement)
    impact_db: float | None = None

    def own_figures(self) -> dict[str, float]:
        """The SQNR figures this tensor's own quantization (and its layer's weights) produce."""
        figures = {"grid": self.own.sqnr_db, "channel": self.own_channels.median_db}
        if self.weights is not None and self.weights.sqnr_db is not None:
            figures["weights"] = min(self.weights.sqnr_db, self.weights.channel_sqnr_db)
        return figures

    @property
    def own_db(self) -> float:
        """The lowest of the figures this tensor's own quantization (and its layer's weights) produce."""
        return min(self.own_figures().values())

    @property
    def clipped_fraction(self) -> float:
        return self.clipped / self.count if self.count else 0.0

    def diagnosis(self) -> str:
        """Which of the figures is lowest, in words."""
        if not (self.in_float_model and self.count):
            return "the float model has no tensor of this name, so nothing was measured"
        figures = self.own_figures()
        lowest = min(figures, key=figures.get)
        if lowest == "channel" and figures["channel"] < figures["grid"] - CHANNEL_GAP_DB:
            return (f"one channel sets its range: the median channel keeps {figures['channel']:.1f} dB, the tensor "
                    f"as a whole {figures['grid']:.1f} dB")
        if lowest == "weights":
            return f"its layer's weights lose the most ({figures['weights']:.1f} dB)"
        if self.clipped_fraction > CLIPPED_NOTABLE:
            return f"its grid clips {self.clipped_fraction:.2%} of the values"
        if self.accumulated.sqnr_db < self.own.sqnr_db - CHANNEL_GAP_DB:
            return (f"its own grid keeps {self.own.sqnr_db:.1f} dB but it arrives at {self.accumulated.sqnr_db:.1f} "
                    "dB: the error comes from before it, or from how the runtime computes its layer")
        return f"its grid alone keeps {self.own_db:.1f} dB"

    def as_dict(self) -> dict:
        weights = None
        if self.weights is not None:
            scales = self.weights.scales.reshape(-1)
            exponents = [power_of_two_exponent(float(s)) for s in scales]
            weights = {
                "scale_min": float(scales.min()), "scale_max": float(scales.max()), "channels": int(scales.size),
                "k": sorted(set(exponents)) if None not in exponents else None,
                "sqnr_db": _json_number(self.weights.sqnr_db),
                "channel_sqnr_db": _json_number(self.weights.channel_sqnr_db),
            }
        measured = self.in_float_model and self.count > 0
        return {
            "tensor": self.name, "depth": self.depth, "layer": self.layer, "op_type": self.op_type,
            "scale": self.grid.scale, "zero_point": self.grid.zero_point, "k": power_of_two_exponent(self.grid.scale),
            "codes": [self.grid.qmin, self.grid.qmax], "grid_range": [self.grid.low, self.grid.high],
            "input_scales": self.input_scales,
            "input_k": [power_of_two_exponent(s) for s in self.input_scales],
            "weights": weights, "bias_bits": self.bias_bits, "bias_saturated": self.bias_saturated,
            "float_range": [self.low, self.high] if measured else None,
            "clipped_fraction": round(self.clipped_fraction, 6) if measured else None,
            "own_sqnr_db": _json_number(self.own.sqnr_db) if measured else None,
            "channel_sqnr_db": _json_number(self.own_channels.median_db) if measured else None,
            "accumulated_sqnr_db": _json_number(self.accumulated.sqnr_db) if measured else None,
            "impact_db": _json_number(self.impact_db), "measured_after": self.read_through,
            "diagnosis": self.diagnosis(),
        }


@dataclasses.dataclass
class Inspection:
    tensors: list[TensorReport]  # worst first
    outputs: dict[str, Agreement]  # the model outputs compared (pre-softmax where a softmax ends the model)
    samples: int

    def as_dict(self) -> dict:
        return {
            "samples": self.samples,
            "outputs": {name: _json_number(a.sqnr_db) for name, a in self.outputs.items()},
            "tensors": [t.as_dict() for t in self.tensors],
        }


def _float_name(quantized: QuantizedActivation) -> str:
    """The float model's name for the tensor: a graph output keeps its name on the dequantized side."""
    return quantized.dequantized.name if quantized.dequantized.is_graph_output() else quantized.source.name


def _scale_of_input(value: ir.Value) -> float | None:
    """The scale of an activation a per-tensor DequantizeLinear produces, else None."""
    found = dequantized_source(value)
    if found is None or found[1] is not None or not found[0].per_tensor:
        return None
    return found[0].s


def _equalized_weight(original: ir.Node, weight: np.ndarray, equalized: dict[str, np.ndarray]) -> np.ndarray:
    """The float model's `weight` of `original` in the units the quantized model holds it in, once equalization
    (eq. 35) scaled the channels around it: its output channels times the factors of the tensor it writes, and
    its filters (depthwise) or columns (one group, eq. 35c) divided by those of the tensor it reads."""
    written = equalized.get(original.outputs[0].name)
    axis = weight_axis(original)
    if written is not None and written.size == weight.shape[axis]:
        weight = weight * written.reshape([-1 if i == axis else 1 for i in range(weight.ndim)])
    read = equalized.get(original.inputs[0].name) if original.inputs else None
    if read is None or original.op_type != "Conv":
        return weight
    divided = divided_on_read_channels(weight, read)
    return weight if divided is None else divided


def _weights(node: ir.Node, float_nodes: dict[str, ir.Node],
             equalized: dict[str, np.ndarray]) -> WeightSummary | None:
    rule = OP_RULES.get(node.op_type)
    if rule is None or rule.weight_input is None or rule.weight_input >= len(node.inputs):
        return None
    dequantized = dequantized_constant(node.inputs[rule.weight_input])
    if dequantized is None:
        return None
    real, grid = dequantized
    axis = None if grid.channel_axis is None else grid.channel_axis % real.ndim
    summary = WeightSummary(grid.scale)
    original = float_nodes.get(node.name)
    reference = None
    if original is not None and original.op_type == node.op_type and rule.weight_input < len(original.inputs):
        reference = constant_array(original.inputs[rule.weight_input])
    if reference is not None and reference.shape == real.shape:
        reference = _equalized_weight(original, reference, equalized)
        whole = Agreement()
        whole.add(reference, real)
        channels = ChannelEnergy()
        channels.add(reference, real, axis if axis is not None else weight_axis(original))
        summary.sqnr_db, summary.channel_sqnr_db = whole.sqnr_db, channels.median_db
    return summary


def _bias(node: ir.Node, metadata: dict | None) -> tuple[int | None, int | None]:
    rule = OP_RULES.get(node.op_type)
    index = rule.bias_input if rule is not None else None
    if index is None or index >= len(node.inputs) or node.inputs[index] is None:
        return None, None
    found = dequantized_source(node.inputs[index])
    if found is None or found[1] is None:
        return None, None
    if metadata is not None:
        return metadata["bits"], metadata["saturated"].get(node.name, 0)
    return found[0].fmt.bits, None


def _describe(quantized: list[QuantizedActivation], model: ir.Model, float_nodes: dict[str, ir.Node],
              float_names: set[str], equalized: dict[str, np.ndarray]) -> list[TensorReport]:
    raw_bias = model.metadata_props.get(BIAS_KEY)
    bias_metadata = json.loads(raw_bias) if raw_bias else None
    reports = []
    for depth, q in enumerate(quantized):
        producer = q.source.producer()
        name = _float_name(q)
        if producer is None:
            reports.append(TensorReport(name, depth, "", "input", q.grid, [], None, None, None, name in float_names,
                                        q.read_through and q.read_through[0]))
            continue
        input_scales = [s for s in (_scale_of_input(v) for v in producer.inputs if v is not None) if s is not None]
        bias_bits, saturated = _bias(producer, bias_metadata)
        reports.append(TensorReport(
            name, depth, producer.name or "", producer.op_type, q.grid, input_scales,
            _weights(producer, float_nodes, equalized), bias_bits, saturated, name in float_names,
            q.read_through and q.read_through[0],
        ))
    return reports


def inspect_models(
    float_model: ir.Model | str | os.PathLike,
    quantized_model: ir.Model | str | os.PathLike,
    samples: Samples,
    *,
    impact: bool = False,
    threads: int = DEFAULT_THREADS,
    show_progress: bool = False,
) -> Inspection:
    """Every quantized activation of `quantized_model`, measured against `float_model` on `samples`."""
    float_model, quantized_model = as_model(float_model), as_model(quantized_model)
    quantized = quantized_activations(quantized_model)
    if not quantized:
        raise InputError("the second model quantizes no activation (no QuantizeLinear on a computed tensor); "
                         "inspect takes FLOAT.onnx QUANT.onnx")
    float_values = {v.name: v for node in float_model.graph for v in node.outputs if v.name}
    float_values.update({v.name: v for v in float_model.graph.inputs})
    float_outputs = [v.name for v in float_model.graph.outputs]
    quantized_outputs = [v.name for v in quantized_model.graph.outputs]
    if sorted(float_outputs) != sorted(quantized_outputs):
        raise InputError(f"the models' outputs differ ({float_outputs} vs {quantized_outputs}); "
                         "inspect a model with its own quantized version")
    prepared = prepare(as_model(ir.to_proto(float_model)))
    float_nodes = {node.name: node for node in prepared.graph if node.name}
    equalized = {name: np.asarray(factors, np.float32)
                 for name, factors in json.loads(quantized_model.metadata_props.get(EQUALIZATION_KEY, "{}")).items()}
    reports = _describe(quantized, quantized_model, float_nodes, set(float_values), equalized)

    # A softmax's input is compared only where both models end in that softmax.
    float_default = compared_values(float_model)
    plain = {name for name, value in compared_values(quantized_model).items()
             if (value.name == name) != (float_default[name].name == name)}
    by_output = compared_values(quantized_model, plain)
    float_by_output = compared_values(float_model, plain)
    float_compared = list(float_by_output.values())
    quantized_compared = [by_output[name] for name in float_by_output]
    compared_names = [v.name for v in float_compared]
    measured = [(r, q) for r, q in zip(reports, quantized) if r.in_float_model]
    wanted_float = list({v.name: v for v in [float_values[r.name] for r, _ in measured] + float_compared}.values())
    wanted_quantized = [q.dequantized for _, q in measured] + quantized_compared
    float_session = session_with_outputs(float_model, wanted_float, threads)
    quantized_session = session_with_outputs(quantized_model, wanted_quantized, threads)
    outputs = {name: Agreement() for name in compared_names}
    kept_feeds, kept_expected = [], []
    batches = progress_bar(samples.batches(), samples.number_of_batches(), "inspecting", show_progress)
    for feeds in batches:
        expected = float_session.run(feeds, [v.name for v in wanted_float])
        got = quantized_session.run(feeds, [v.name for v in wanted_quantized])
        for report, q in measured:
            reference = expected[report.name]
            arrived = got[q.dequantized.name]
            # An equalized tensor (eq. 35) is the float one times its channel factors in the quantized model.
            factors = equalized.get(report.name)
            per_channel = 1.0 if factors is None else factors.reshape(-1, *[1] * (reference.ndim - 2))
            on_grid = reference * per_channel
            fake = report.grid.fake_quantize(on_grid)
            half = report.grid.scale / 2
            clipped = (on_grid < report.grid.low - half) | (on_grid > report.grid.high + half)
            if reference.size:
                report.low = min(report.low, float(on_grid.min()))
                report.high = max(report.high, float(on_grid.max()))
            if q.read_through is not None:
                # Only what the activation makes of the tensor matters (eq. 8a): measure after it,
                # and count a clipped value only where clipping changes the activation's output by
                # more than half a step of 255 over the output's range. The activation is the quantized
                # model's (an equalized hard-swish's gate has per-channel slopes, eq. 35b), applied on the grid.
                activation = q.read_through[1]
                exact = activation(on_grid) / per_channel
                moved = np.abs(activation(np.clip(on_grid, report.grid.low, report.grid.high)) / per_channel - exact)
                tolerance = (float(exact.max()) - float(exact.min())) / 510 if exact.size else 0.0
                clipped &= moved > tolerance
                reference, fake, arrived = exact, activation(fake) / per_channel, activation(arrived) / per_channel
            else:
                fake, arrived = fake / per_channel, arrived / per_channel
            report.own.add(reference, fake)
            report.own_channels.add(reference, fake, CHANNEL_AXIS)
            report.accumulated.add(reference, arrived)
            report.clipped += int(np.count_nonzero(clipped))
            report.count += reference.size
        for value, name in zip(quantized_compared, compared_names):
            outputs[name].add(expected[name], got[value.name])
        if impact:
            kept_feeds.append(feeds)
            kept_expected.append({name: expected[name] for name in compared_names})
    float_session.close()
    quantized_session.close()

    if impact:
        expected_names = {output: value.name for output, value in float_by_output.items()}
        # Biases corrected for the error of every tensor as quantized (eq. 7b) would over-correct where one
        # tensor stays float: impact is measured with the corrections undone, as quantization alone leaves it.
        _, groups = grid_impacts(without_bias_corrections(quantized_model), quantized, kept_feeds, kept_expected,
                                 expected_names, threads, show_progress, plain=plain)
        for group in groups:
            for i in group.members:
                reports[i].impact_db = group.impact_db
    reports.sort(key=_severity)
    return Inspection(reports, outputs, samples.count)


def _severity(report: TensorReport) -> tuple[float, int]:
    """Sort key, worst first: the largest impact when measured, else the lowest own figure."""
    if report.impact_db is not None:
        return (-report.impact_db if not math.isnan(report.impact_db) else math.inf, report.depth)
    return (report.own_db if report.in_float_model and report.count else math.inf, report.depth)

"""Quantized activations of a QDQ model, the grids they share, and what keeping each group float is worth.

What `inspect` reports per tensor and the budget's search (fallback.py) ranks: a group of activations sharing
one grid is bypassed (its QuantizeLinear -> DequantizeLinear pairs removed) in a copy of the model, and the rise
of the worst output SQNR measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection

import numpy as np
import onnx_ir as ir

from eightbit.backends.integer_ops import Quantized
from eightbit.backends.onnxruntime import OrtSession, session_with_outputs
from eightbit.backends.reference import dequantized_source, quantized_grid
from eightbit.config import DEFAULT_THREADS, IntegerFormat
from eightbit.ir.graph import add_initializer, constant_array, replace_output, unique_name
from eightbit.measure.metrics import Agreement, compared_values
from eightbit.measure.progress import progress_bar
from eightbit.plan.ops import OP_RULES, OutputRange
from eightbit.quant import dequantize, quantize
from eightbit.quant.saturation import SATURATING_ACTIVATIONS, saturating_activation


@dataclasses.dataclass(frozen=True)
class Grid:
    """A per-tensor integer grid: real = scale * (q - zero_point), q in fmt's [qmin, qmax]."""

    scale: float
    zero_point: int
    fmt: IntegerFormat

    @classmethod
    def of(cls, quantized: Quantized) -> Grid:
        return cls(quantized.s, quantized.zp, quantized.fmt)

    @property
    def qmin(self) -> int:
        return self.fmt.qmin

    @property
    def qmax(self) -> int:
        return self.fmt.qmax

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        """dequantize(quantize(x)) as ONNX QuantizeLinear / DequantizeLinear compute it (eq. 5, 1)."""
        scale, zero_point = np.float32(self.scale), np.asarray(self.zero_point)
        return dequantize(quantize(x, scale, zero_point, self.fmt), scale, zero_point)

    @property
    def low(self) -> float:
        return self.scale * (self.qmin - self.zero_point)

    @property
    def high(self) -> float:
        return self.scale * (self.qmax - self.zero_point)


@dataclasses.dataclass
class QuantizedActivation:
    """A QuantizeLinear on a computed tensor and the DequantizeLinear that reads it back."""

    source: ir.Value  # the float tensor it quantizes
    dequantized: ir.Value
    grid: Grid
    # The saturating activation that alone reads the tensor (eq. 8a), as (op type, formula).
    read_through: tuple[str, Callable[[np.ndarray], np.ndarray]] | None = None


def quantized_activations(model: ir.Model) -> list[QuantizedActivation]:
    found = []
    for node in model.graph:
        if node.op_type != "QuantizeLinear" or constant_array(node.inputs[0]) is not None:
            continue
        grid = quantized_grid(node, node.outputs[0].name)
        if grid is None or not grid.per_tensor:
            continue  # per-axis activations: not a layout this report reads
        readers = [use.node for use in node.outputs[0].uses() if use.node.op_type == "DequantizeLinear"]
        if not readers:
            continue
        found.append(QuantizedActivation(node.inputs[0], readers[0].outputs[0], Grid.of(grid),
                                _saturating_reader(readers[0].outputs[0])))
    return found


def _saturating_reader(value: ir.Value) -> tuple[str, Callable[[np.ndarray], np.ndarray]] | None:
    """(op type, formula) when every reader of `value` is the same saturating activation, or a hard-swish in
    gate form (docs/quantization.md, section 6b)."""
    slopes = _swish_gate_slopes(value)
    if slopes is not None:
        return "HardSwish", saturating_activation("HardSwish", slope=slopes)
    uses = value.uses()
    if not uses or any(use.idx != 0 for use in uses):
        return None
    readers = {(use.node.op_type, tuple(sorted((k, a.value) for k, a in use.node.attributes.items()))) for use in uses}
    if len(readers) != 1:
        return None
    op_type, attributes = next(iter(readers))
    if op_type not in SATURATING_ACTIVATIONS:
        return None
    attributes = dict(attributes)
    return op_type, saturating_activation(op_type, attributes.get("alpha", 0.2), attributes.get("beta", 0.5))


def _swish_gate_slopes(value: ir.Value) -> np.ndarray | None:
    """The gate's slopes, shaped to broadcast against `value` (channels on axis 1), where `value` is read only
    by hard-swish in gate form: a depthwise convolution whose weights dequantize to positive slopes (1/6, or
    1/(6 f_c) once equalized, eq. 35b) and whose bias dequantizes to 1/2, and a Mul of `value` by that gate
    (through its Q/DQ pair)."""
    readers = [use.node for use in value.uses()]
    gate = next((node for node in readers if node.op_type == "Conv"), None)
    product = next((node for node in readers if node.op_type == "Mul"), None)
    if len(readers) != 2 or gate is None or product is None or len(gate.inputs) != 3 or gate.inputs[0] is not value:
        return None
    weight, bias = dequantized_constant(gate.inputs[1]), dequantized_constant(gate.inputs[2])
    if weight is None or bias is None or not (np.all(weight[0] > 0) and np.allclose(bias[0], 0.5, rtol=0.02)):
        return None
    rank = len(value.shape) if value.shape is not None else 4
    slopes = weight[0].reshape((1, -1) + (1,) * (rank - 2))
    other = next((v for v in product.inputs if v is not value), None)
    while other is not None and other.producer() is not None and other.producer() is not gate:
        producer = other.producer()
        if producer.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            return None
        other = producer.inputs[0]
    return slopes if other is not None and other.producer() is gate else None


def dequantized_constant(value: ir.Value) -> tuple[np.ndarray, Quantized] | None:
    """(real values, grid) of a constant read through a DequantizeLinear, else None."""
    found = dequantized_source(value)
    if found is None or found[1] is None:
        return None
    grid, codes = found
    return dequantize(codes, grid.scale, grid.zero_point, grid.channel_axis), grid


def shared_grids(quantized: list[QuantizedActivation]) -> list[list[int]]:
    """Indices of `quantized` grouped by the grid they share: a data-movement op (or a Relu/Clip)
    whose output carries its input's grid passes codes through, so leaving one of them float
    alone changes nothing; they are left float together."""
    parent = list(range(len(quantized)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_dequantized = {q.dequantized: i for i, q in enumerate(quantized)}
    for i, q in enumerate(quantized):
        producer = q.source.producer()
        if producer is None:
            continue
        rule = OP_RULES.get(producer.op_type)
        passes = (rule is not None and rule.output is OutputRange.SAME_AS_INPUT) or producer.op_type in ("Relu", "Clip")
        source = by_dequantized.get(producer.inputs[0]) if producer.inputs else None
        if passes and source is not None and quantized[source].grid == q.grid:
            parent[root(i)] = root(source)
    groups: dict[int, list[int]] = {}
    for i in range(len(quantized)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _bypassed(proto, group: list[QuantizedActivation]) -> ir.Model:
    """A copy of the quantized model (from its proto) in which the tensors of `group` stay float.

    Each QuantizeLinear -> DequantizeLinear pair is removed; where the grid starts at its zero
    point (eq. 8: it may stand for a fused Relu or Clip), a Clip at that bound takes its place.
    """
    model = ir.from_proto(proto)
    graph = model.graph
    taken: set[str] = set()
    producers = {v.name: node for node in graph for v in node.outputs}
    for quantized in group:
        dequantize = producers[quantized.dequantized.name]
        quantize = dequantize.inputs[0].producer()
        source = quantize.inputs[0]
        if quantized.grid.zero_point == quantized.grid.qmin:
            bound = add_initializer(graph, unique_name(graph, f"{source.name}_bound", taken),
                                    np.array(quantized.grid.low, dtype=np.float32))
            kept = ir.node("Clip", [source, bound])
        else:
            kept = ir.node("Identity", [source])
        graph.insert_after(dequantize, kept)
        replace_output(graph, dequantize.outputs[0], kept.outputs[0], takes_name=False)
        graph.remove(dequantize, safe=True)
        if not quantize.outputs[0].uses():
            graph.remove(quantize, safe=True)
    return model


def _output_agreement(session: OrtSession, names: list[str], expected: list[dict[str, np.ndarray]],
                      feeds: list[dict[str, np.ndarray]], compared: list[str]) -> dict[str, Agreement]:
    agreements = {name: Agreement() for name in compared}
    for batch, reference in zip(feeds, expected):
        got = session.run(batch, names)
        for name, expected_name in zip(names, compared):
            agreements[expected_name].add(reference[expected_name], got[name])
    return agreements


def _worst_db(agreements: dict[str, Agreement]) -> float:
    return min(a.sqnr_db for a in agreements.values())


@dataclasses.dataclass
class GridImpact:
    """Tensors that share one grid, and how much the worst output SQNR rises when they stay float."""

    members: list[int]  # indices into the list of quantized activations
    impact_db: float


def grid_impacts(
    model: ir.Model, quantized: list[QuantizedActivation], feeds: list[dict[str, np.ndarray]],
    expected: list[dict[str, np.ndarray]], expected_names: dict[str, str], threads: int = DEFAULT_THREADS,
    show_progress: bool = False, also: Callable[[ir.Model, list[QuantizedActivation]], None] | None = None,
    plain: Collection[str] = (),
) -> tuple[float, list[GridImpact]]:
    """The worst SQNR of `model`'s compared values (compared_values) vs `expected` over `feeds`, and per
    group of `quantized` sharing a grid, how much it rises when that group stays float (its QuantizeLinear
    -> DequantizeLinear pairs bypassed, everything else quantized). `expected_names`: graph output name ->
    the key of its expected value in each dict of `expected`. `also` changes each variant further
    (given the variant and the group, by name in the variant). `plain`: outputs compared as they are
    even where a softmax makes them."""
    def worst_db(variant: ir.Model) -> float:
        # Baseline and variants alike expose only the compared values, so that the runtime fuses the same groups.
        by_output = compared_values(variant, plain)
        compared = [by_output[name] for name in expected_names]
        names = [v.name for v in compared]
        session = session_with_outputs(variant, compared, threads)
        worst = _worst_db(_output_agreement(session, names, expected, feeds, list(expected_names.values())))
        session.close()
        return worst

    baseline = worst_db(model)
    proto = ir.to_proto(model)
    impacts = []
    groups = shared_grids(quantized)
    for group in progress_bar(groups, len(groups), "impact", show_progress):
        variant = _bypassed(proto, [quantized[i] for i in group])
        if also is not None:
            also(variant, [quantized[i] for i in group])
        impacts.append(GridImpact(group, worst_db(variant) - baseline))
    return baseline, impacts

"""Keeping quantized tensors in float until a model meets a budget: an output-SQNR floor (--min-sqnr)
or the most a task metric may drop (--max-drop) (docs/quantization.md, section 11b).

Harm is measured, not guessed: for every group of activations sharing one grid, how much the
worst output SQNR (pre-softmax, eq. 14) rises when that group alone stays float
(report.inspect.grid_impacts). The groups are taken in two orders, each a prefix kept float: the most
harmful first, then the order the graph computes them in (error that enters early is carried, and
often amplified, by every layer after it), searched below the count the first order needed. In each
order the fewest that meet the budget are found by doubling, then bisection, each step a real model
measured on the samples; the fewest of the two orders are kept float.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.config import DEFAULT_THREADS
from eightbit.ir.graph import add_initializer, constant_array, unique_name
from eightbit.measure.grids import QuantizedActivation, grid_impacts, quantized_activations, shared_grids
from eightbit.measure.metrics import compared_values


@dataclasses.dataclass(frozen=True)
class Harm:
    """Tensors sharing one grid, the nodes that must stay float for them to stay float (their producers
    and readers), and how much the worst output SQNR rose with them in float (None: not measured)."""

    tensors: tuple[str, ...]
    nodes: tuple[str, ...]
    impact_db: float | None = None


@dataclasses.dataclass(frozen=True)
class Budget:
    """What the fallback must reach: `limit` in `unit`, of what `measures` names. --min-sqnr is met at or
    above its limit, --max-drop at or below."""

    flag: str  # "--min-sqnr" or "--max-drop"
    limit: float
    unit: str
    measures: str
    floor: bool = False  # the scheme's own (--min-sqnr auto), not the caller's

    @staticmethod
    def min_sqnr(db: float, floor: bool = False) -> Budget:
        return Budget("--min-sqnr", db, "dB", "worst output SQNR", floor)

    @staticmethod
    def max_drop(points: float, metric: str = "top-1 agreement with float") -> Budget:
        return Budget("--max-drop", points, "points", f"drop in {metric}")

    def meets(self, value: float) -> bool:
        return value <= self.limit if self.flag == "--max-drop" else value >= self.limit

    def standing(self, value: float) -> float:
        """`value` as a figure that is higher the closer it is to meeting the budget."""
        return -value if self.flag == "--max-drop" else value


# The orders the groups are kept float in, each searched for its shortest prefix that meets the budget.
MOST_HARMFUL_FIRST = "most harmful first"
FROM_THE_INPUT = "from the input"
SEARCH_ORDERS = (MOST_HARMFUL_FIRST, FROM_THE_INPUT)
# The search from the input keeps at most this share of the grids float: past it, the model would be a
# float model in all but name.
FROM_THE_INPUT_AT_MOST = 0.5


@dataclasses.dataclass
class Fallback:
    """What a budget search found: the measure (in the budget's unit) before and after."""

    budget: Budget
    before: float  # with everything quantized
    after: float  # ... with the kept groups in float
    kept: list[Harm]
    probes: int  # models built and measured
    latency_ms: tuple[float, float] | None = None  # (all quantized, with the kept nodes float), side by side
    order: str = MOST_HARMFUL_FIRST  # the order `kept` is a prefix of (SEARCH_ORDERS)
    # Where a floor was missed and the all-integer model returned: the measure closest to the budget that the
    # search reached, and how many grids it kept float for it.
    closest: float | None = None
    closest_grids: int = 0

    @property
    def met(self) -> bool:
        return self.budget.meets(self.after)

    @property
    def kept_nodes(self) -> list[str]:
        return list(dict.fromkeys(name for harm in self.kept for name in harm.nodes))

    def summary(self) -> str:
        """One line for the report."""
        budget = self.budget
        head = f"{budget.flag} {budget.limit:g} {budget.unit}" + (" (the default floor)" if budget.floor else "")
        if not self.kept and self.met:
            return (f"{head}: met with every node quantized ({budget.measures}: {self.after:.1f} {budget.unit} "
                    "on the calibration samples)")
        if not self.kept and self.closest is not None:
            return (f"{head}: NOT met; the all-integer model is returned ({budget.measures}: {self.after:.1f} "
                    f"{budget.unit} on the calibration samples): keeping float up to {self.closest_grids} tensor "
                    f"grids, {self.order}, reached {self.closest:.1f} {budget.unit} at best ({self.probes} models "
                    "measured). To close the gap: `eightbit inspect FLOAT INT8 --data SAMPLES --impact` names the "
                    "tensors that cost most; --effort max searches harder; `eightbit finetune` fits the codes to "
                    "the float model")
        if not self.kept:
            return (f"{head}: NOT met, and every node kept quantized: no model with tensors kept float measured "
                    f"better ({budget.measures}: {self.after:.1f} {budget.unit} on the calibration samples, "
                    f"{self.probes} models measured)")
        verdict = "met" if self.met else "NOT met even"
        grids = f"{len(self.kept)} tensor grid{'s' if len(self.kept) != 1 else ''}"
        text = (f"{head}: {verdict} with {len(self.kept_nodes)} nodes kept float for {grids}, {self.order} "
                f"({budget.measures}: {self.before:.1f} -> {self.after:.1f} {budget.unit} on "
                f"the calibration samples, {self.probes} models measured)")
        if self.latency_ms is not None:
            quantized, kept = self.latency_ms
            text += f"; latency {quantized:.2f} -> {kept:.2f} ms ({kept / quantized:.2f}x)"
        return text

    def as_dict(self) -> dict:
        return {
            "flag": self.budget.flag, "limit": self.budget.limit, "unit": self.budget.unit,
            "measures": self.budget.measures, "floor": self.budget.floor,
            "before": round(self.before, 3), "after": round(self.after, 3),
            "met": self.met, "probes": self.probes, "order": self.order,
            "closest": None if self.closest is None else round(self.closest, 3), "closest_grids": self.closest_grids,
            "kept": [{"tensors": list(h.tensors), "nodes": list(h.nodes),
                      "impact_db": None if h.impact_db is None else round(h.impact_db, 3)} for h in self.kept],
            "latency_ms": None if self.latency_ms is None else
            {"all_quantized": round(self.latency_ms[0], 4), "with_float_nodes": round(self.latency_ms[1], 4)},
        }


def fallback_from_dict(data: dict) -> Fallback:
    """The inverse of Fallback.as_dict (the kept groups' impacts rounded as stored); also reads the form
    models made before --max-drop stored (budget_db, before_db, after_db)."""
    latency = data.get("latency_ms")
    if "budget_db" in data:
        budget, before, after = Budget.min_sqnr(data["budget_db"]), data["before_db"], data["after_db"]
    else:
        budget = Budget(data["flag"], data["limit"], data["unit"], data["measures"], data.get("floor", False))
        before, after = data["before"], data["after"]
    return Fallback(
        budget, before, after,
        [Harm(tuple(h["tensors"]), tuple(h["nodes"]), h["impact_db"]) for h in data["kept"]], data["probes"],
        None if latency is None else (latency["all_quantized"], latency["with_float_nodes"]),
        data.get("order", MOST_HARMFUL_FIRST), data.get("closest"), data.get("closest_grids", 0),
    )


def _nodes_touching(members: list[QuantizedActivation]) -> list[ir.Node]:
    """The producers and readers of quantized activations: the nodes that stay float with them."""
    nodes = []
    for member in members:
        producer = member.source.producer()
        nodes += [producer] if producer is not None else []
        nodes += [use.node for use in member.dequantized.uses()]
    return list(dict.fromkeys(nodes))


def _float_constants_from(reference: ir.Model) -> Callable[[ir.Model, list[QuantizedActivation]], None]:
    """A change to a bypassed variant: the nodes its group touches read `reference`'s float constants
    (weights, biases) again instead of dequantized codes, as they do when the plan keeps them float."""
    by_name = {node.name: node for node in reference.graph if node.name}

    def restore(variant: ir.Model, members: list[QuantizedActivation]) -> None:
        touched = {node.name for node in _nodes_touching(members) if node.name}
        taken: set[str] = set()
        for node in [node for node in variant.graph if node.name in touched]:
            original = by_name.get(node.name)
            if original is None or original.op_type != node.op_type:
                continue
            for index, value in enumerate(node.inputs):
                producer = value.producer() if value is not None else None
                if producer is None or producer.op_type != "DequantizeLinear" or index >= len(original.inputs):
                    continue
                array = constant_array(original.inputs[index]) if original.inputs[index] is not None else None
                if array is None or constant_array(producer.inputs[0]) is None:
                    continue
                name = unique_name(variant.graph, f"{value.name}_float", taken)
                node.replace_input_with(index, add_initializer(variant.graph, name, array))
    return restore


def measured_harms(
    quantized_model: ir.Model, reference: ir.Model, batches: list[dict[str, np.ndarray]],
    threads: int = DEFAULT_THREADS, show_progress: bool = False,
) -> list[Harm]:
    """Every group of `quantized_model`'s activations sharing a grid, in the order the graph computes them
    (by the first of its tensors), with how much keeping it float alone raises the worst output SQNR vs
    `reference` on `batches` (zero or less where it does not)."""
    quantized = quantized_activations(quantized_model)
    expected_values = compared_values(reference)
    expected_names = {output: value.name for output, value in expected_values.items()}
    session = session_with_outputs(reference, list(expected_values.values()), threads)
    expected = [session.run(feeds, list(expected_names.values())) for feeds in batches]
    session.close()
    _, impacts = grid_impacts(quantized_model, quantized, batches, expected, expected_names, threads, show_progress,
                              also=_float_constants_from(reference))
    ordered = sorted(impacts, key=lambda impact: min(impact.members))
    return [_harm([quantized[i] for i in impact.members], impact.impact_db) for impact in ordered]


def grid_groups(quantized_model: ir.Model) -> list[Harm]:
    """Every group of `quantized_model`'s activations sharing a grid, in the order the graph computes them (by
    the first of its tensors), as measured_harms gives them but with no harm measured: what a search from the
    input needs."""
    quantized = quantized_activations(quantized_model)
    return [_harm([quantized[i] for i in group]) for group in sorted(shared_grids(quantized), key=min)]


def _harm(members: list[QuantizedActivation], impact_db: float | None = None) -> Harm:
    """The group of `members`: their tensors, the nodes that stay float with them, and its harm where measured."""
    names = tuple(node.name for node in _nodes_touching(members) if node.name)
    return Harm(tuple(member.source.name for member in members), names, impact_db)


def in_search_order(harms: list[Harm], order: str) -> list[Harm]:
    """`harms` (as measured_harms gives them) as the search keeps them float in `order`: the most harmful
    first (only those whose float keeping gains anything), or from the input (the first
    FROM_THE_INPUT_AT_MOST of them)."""
    if order == MOST_HARMFUL_FIRST:
        return sorted([harm for harm in harms if harm.impact_db > 0], key=lambda harm: -harm.impact_db)
    if order == FROM_THE_INPUT:
        return harms[:math.ceil(len(harms) * FROM_THE_INPUT_AT_MOST)]
    raise ValueError(f"unknown search order {order!r}")


def fewest_meeting(meets: Callable[[float], bool], available: int, measure: Callable[[int], float],
                   standing: Callable[[float], float] | None = None, slack: float = 0.0,
                   most_first: bool = False) -> tuple[int, float, int]:
    """The smallest k in 1..available whose measure(k) meets the budget, assuming more kept float never
    hurts: doubling, then bisection, which stops once the k found is within `slack` (a share of it) of the
    smallest that can meet it. Returns (k, its measure, probes). Where none meets it: k = available, or,
    given `standing` (a measure -> higher is closer to the budget), the k measured closest; more kept float
    does not always measure better (the errors of separate grids can partly cancel).

    `most_first`: k = available is measured first; where it misses, the search ends there (one probe), and
    where it meets, bisection starts from it, without doubling."""
    measured: dict[int, float] = {}

    def good(k: int) -> bool:
        if k not in measured:
            measured[k] = measure(k)
        return meets(measured[k])

    low, high = 0, 1  # low: known not to meet (0: nothing kept)
    if most_first:
        high = available
    while high < available and not good(high):
        low, high = high, min(2 * high, available)
    if not good(high):
        best = high if standing is None else max(measured, key=lambda k: (standing(measured[k]), -k))
        return best, measured[best], len(measured)
    while high - low > max(1.0, slack * high):
        middle = (low + high) // 2
        if good(middle):
            high = middle
        else:
            low = middle
    return high, measured[high], len(measured)


def searched_prefixes(
    harms: list[Harm], budget: Budget, measure: Callable[[str, list[Harm]], float],
    orders: tuple[str, ...] = SEARCH_ORDERS, at_most: int | None = None, slack: float = 0.0,
    most_first: bool = False,
) -> tuple[str, list[Harm], float, int] | None:
    """The shortest prefix of `harms` (as measured_harms gives them), in any of `orders` (SEARCH_ORDERS), whose
    keeping float meets `budget` (the first order's, where two meet it with as many groups); where no order has
    one, the prefix measured closest to it. No prefix is longer than `at_most` groups. Each order after the first
    is searched only for fewer groups than one already found; `slack` as fewest_meeting's. `measure(order, kept)`
    builds and measures the model with `kept` float. Returns (order, kept, its measure, models measured), or None
    where no order has anything to keep float. `most_first`: each order's longest prefix is measured first, as
    fewest_meeting's."""
    searched: list[tuple[str, list[Harm], float]] = []
    probes = 0
    for order in orders:
        ordered = in_search_order(harms, order)[:at_most]
        meeting = [len(kept) for _, kept, value in searched if budget.meets(value)]
        most = min([len(ordered), *(count - 1 for count in meeting)])
        if most < 1:
            continue

        def measure_count(count: int, order: str = order, ordered: list[Harm] = ordered) -> float:
            return measure(order, ordered[:count])

        count, value, used = fewest_meeting(budget.meets, most, measure_count, budget.standing, slack, most_first)
        probes += used
        searched.append((order, ordered[:count], value))
    if not searched:
        return None
    met = [found for found in searched if budget.meets(found[2])]
    if met:
        order, kept, value = min(met, key=lambda found: len(found[1]))
    else:
        order, kept, value = max(searched, key=lambda found: budget.standing(found[2]))
    return order, kept, value, probes

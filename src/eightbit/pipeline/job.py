"""The records the pipeline's steps read and write: what one quantize call shares (Job), and one model built
with the choices that made it (Build)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator

import onnx_ir as ir

from eightbit.calibrate.memo import RangeMemo
from eightbit.calibrate.per_tensor import PerTensorCalibration
from eightbit.datasets import Samples
from eightbit.measure.context import CHECK_BATCHES, Measure
from eightbit.pipeline.options import MARGIN_DB, Resolved, WeightRange
from eightbit.plan import FloatNode


@dataclasses.dataclass(frozen=True)
class Job:
    """What every build of one quantize call shares.

    `reference` is the float model the builds start from and are measured against (prepared; equalized once
    equalization is taken). `method` is the calibration method's name, or --calibrate auto's per-tensor search,
    one state for every model built. `measure` holds the float outputs on the calibration samples, and `ranges`
    the activation ranges of each float model built from (both None without samples).
    """

    reference: ir.Model
    options: Resolved
    samples: Samples | None
    measure: Measure | None
    method: str | PerTensorCalibration
    ranges: RangeMemo | None = None
    # Step -> seconds spent in it, for the report; never in the model (it would depend on the machine's load).
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Adds the time spent in the block to `seconds[step]`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - start

    @property
    def excluded(self) -> frozenset[str]:
        """The names of the nodes --exclude keeps float."""
        return frozenset(self.options.excluded)

    def excluded_nodes(self, model: ir.Model) -> list[FloatNode]:
        """The nodes of `model` --exclude keeps float, as the report lists float nodes."""
        return [FloatNode(node.name, node.op_type, self.options.excluded[node.name]) for node in model.graph
                if node.name in self.options.excluded]

    def worst_sqnr_db(self, models: list[ir.Model], batches: int = CHECK_BATCHES) -> list[float]:
        """Each model's worst output SQNR (pre-softmax) vs the reference on the first `batches` calibration
        batches."""
        return self.measure.worst_sqnr_db(models, self.reference, batches)


@dataclasses.dataclass(frozen=True)
class Decision:
    """One choice a step made: the step, what it took in a few words (the report's line), and what it measured,
    in full (the model's metadata, `--verbose`)."""

    step: str
    taken: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Build:
    """One quantized model, its float nodes, and the choices that made it.

    `weight_range`: FULL or SEVEN_BIT, the range taken (a rebuild with other nodes float takes it as it is).
    `gates`: whether its hard-swishes are gate convolutions (None where the model has none to rewrite).
    """

    model: ir.Model
    float_nodes: list[FloatNode]
    decisions: tuple[Decision, ...]
    weight_range: WeightRange
    gates: bool | None = None

    def decided(self, decision: Decision) -> Build:
        """The same build with one more decision."""
        return dataclasses.replace(self, decisions=(*self.decisions, decision))


def taken(candidate_db: float, base_db: float, margin_db: float = MARGIN_DB) -> bool:
    """The one rule of every measured choice: a candidate is taken where its worst output SQNR is at least
    `margin_db` above the base's (a negative margin: at most that much below, for a choice that buys speed)."""
    return candidate_db >= base_db + margin_db

"""The records the pipeline's steps read and write: what one quantize call shares (Job), and one model built
with the choices that made it (Build)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from eightbit.calibrate.memo import RangeMemo
from eightbit.calibrate.per_tensor import PerTensorCalibration
from eightbit.datasets import Samples
from eightbit.measure.context import Measure
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

    def worst_sqnr_db(self, models: list[ir.Model], **batches) -> list[float]:
        """Each model's worst output SQNR (pre-softmax) vs the reference on the calibration batches."""
        return self.measure.worst_sqnr_db(models, self.reference, **batches)


@dataclasses.dataclass(frozen=True)
class Build:
    """One quantized model, its float nodes, and how its weights were chosen.

    `note`: the choices that made it, in words (the report's line). `weight_range`: FULL or SEVEN_BIT, the range
    taken (a rebuild with other nodes float takes it as it is). `gates`: whether its hard-swishes are gate
    convolutions (None where the model has none to rewrite).
    """

    model: ir.Model
    float_nodes: list[FloatNode]
    note: str
    weight_range: WeightRange
    gates: bool | None = None

    def noted(self, text: str) -> Build:
        """The same build with `text` added to its note."""
        return dataclasses.replace(self, note=f"{self.note}; {text}" if self.note else text) if text else self


def taken(candidate_db: float, base_db: float, margin_db: float = MARGIN_DB) -> bool:
    """The one rule of every measured choice: a candidate is taken where its worst output SQNR is at least
    `margin_db` above the base's (a negative margin: at most that much below, for a choice that buys speed)."""
    return candidate_db >= base_db + margin_db

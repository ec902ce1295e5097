"""Reading back what quantize and finetune recorded in a model's metadata (the keys are in metadata.py)."""

from __future__ import annotations

import json

import onnx_ir as ir

from eightbit.fallback import Fallback, fallback_from_dict
from eightbit.metadata import BIAS_KEY, DECISIONS_KEY, FALLBACK_KEY, FINETUNE_KEY, FLOAT_NODES_KEY, SPEED_CHECK_KEY
from eightbit.never_slower import SpeedCheck
from eightbit.plan import FloatNode


def bias_saturation_of(model: ir.Model) -> dict[str, int]:
    """Node -> number of bias values that did not fit the scheme's bias width."""
    raw = model.metadata_props.get(BIAS_KEY)
    return json.loads(raw)["saturated"] if raw else {}


def finetune_of(model: ir.Model) -> dict | None:
    """What eightbit finetune did to the model, or None."""
    raw = model.metadata_props.get(FINETUNE_KEY)
    return json.loads(raw) if raw else None


def speed_check_of(model: ir.Model) -> SpeedCheck | None:
    """What the speed check found and decided when the model was made, or None where it did not run."""
    raw = model.metadata_props.get(SPEED_CHECK_KEY)
    return SpeedCheck.from_dict(json.loads(raw)) if raw else None


def fallback_of(model: ir.Model) -> Fallback | None:
    """What --min-sqnr or --max-drop did when the model was made, or None."""
    raw = model.metadata_props.get(FALLBACK_KEY)
    return fallback_from_dict(json.loads(raw)) if raw else None


def float_nodes_of(model: ir.Model) -> list[FloatNode]:
    """The nodes a quantized model computes in float, as recorded when it was made."""
    raw = model.metadata_props.get(FLOAT_NODES_KEY)
    return [FloatNode(**entry) for entry in json.loads(raw)] if raw else []


def decisions_of(model: ir.Model) -> list[dict[str, str]]:
    """The choices quantize made, in short ({"step", "taken"}, in the order made); [] for older models."""
    raw = model.metadata_props.get(DECISIONS_KEY)
    return json.loads(raw) if raw else []

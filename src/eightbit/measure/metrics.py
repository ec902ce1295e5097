"""Agreement between a reference output and a test output, accumulated over batches."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection

import numpy as np
import onnx_ir as ir


@dataclasses.dataclass
class Agreement:
    """Streaming per-output agreement: SQNR, max abs error, top-1 agreement (classification-like outputs).

    SQNR = 10 log10(sum ref^2 / sum (ref - test)^2), in dB, over every element seen
    (docs/quantization.md, eq. 14). Top-1 compares the argmax over the last axis when that
    axis has more than one entry.
    """

    signal: float = 0.0
    noise: float = 0.0
    max_abs_error: float = 0.0
    top1_same: int = 0
    top1_total: int = 0

    def add(self, reference: np.ndarray, test: np.ndarray) -> None:
        reference = np.asarray(reference, dtype=np.float64)
        test = np.asarray(test, dtype=np.float64)
        if reference.shape != test.shape:
            raise ValueError(f"output shapes differ: {reference.shape} vs {test.shape}")
        error = reference - test
        self.signal += float(np.sum(reference * reference))
        self.noise += float(np.sum(error * error))
        if error.size:
            self.max_abs_error = max(self.max_abs_error, float(np.max(np.abs(error))))
        classes = _class_axis_view(reference)
        if classes is not None:
            self.top1_same += int(np.sum(classes.argmax(-1) == _class_axis_view(test).argmax(-1)))
            self.top1_total += classes.shape[0]

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)

    @property
    def top1_agreement(self) -> float | None:
        return self.top1_same / self.top1_total if self.top1_total else None


def _class_axis_view(array: np.ndarray) -> np.ndarray | None:
    """Rows of class scores: [N, C] (trailing 1-sized axes dropped), or None if not classification-like."""
    squeezed = array.reshape(array.shape[:2]) if array.ndim > 2 and all(d == 1 for d in array.shape[2:]) else array
    if squeezed.ndim != 2 or squeezed.shape[-1] < 2:
        return None
    return squeezed


# Ops between a Softmax and the graph output that only reshape or re-encode its values.
_AFTER_SOFTMAX = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "QuantizeLinear", "DequantizeLinear")


def compared_values(model: ir.Model, plain: Collection[str] = ()) -> dict[str, ir.Value]:
    """Graph output name -> the value agreement is measured on: the output itself, or the input of
    the (Log)Softmax that makes it, through reshapes and Q/DQ (a saturated softmax hides every
    difference in its input). Outputs named in `plain` are measured as they are."""
    compared = {}
    for output in model.graph.outputs:
        if output.name in plain:
            compared[output.name] = output
            continue
        node = output.producer()
        while node is not None and node.op_type in _AFTER_SOFTMAX:
            node = node.inputs[0].producer()
        softmax = node is not None and node.op_type in ("Softmax", "LogSoftmax")
        compared[output.name] = node.inputs[0] if softmax else output
    return compared



def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    agreement = Agreement()
    agreement.add(reference, test)
    return agreement.sqnr_db


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(scores).reshape(len(labels), -1).argmax(-1) == labels))


def top1_agreement_percent(scores: np.ndarray, reference: np.ndarray) -> float:
    """Share of rows (the last axis holds the classes) whose highest score is in the same class as the
    reference's, in percent: --max-drop's default metric."""
    classes = reference.shape[-1]
    same = np.asarray(scores).reshape(-1, classes).argmax(-1) == np.asarray(reference).reshape(-1, classes).argmax(-1)
    return 100.0 * float(np.mean(same))

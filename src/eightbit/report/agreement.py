"""How closely ONNX Runtime computes what the reference kernels define, in output codes (LSB).

Each integer step of the reference is fed the very codes ONNX Runtime produced for its inputs
and its output codes are compared with ONNX Runtime's: differences then come from that one
op's arithmetic (ONNX Runtime's float requantization, eq. 12, or its CPU's int16 pair sums),
not from differences that entered earlier and grew. The model outputs are compared end to end.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.backends.reference import QuantizeStep, ReferenceSession
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples
from eightbit.ir import as_model
from eightbit.measure.progress import progress_bar


@dataclasses.dataclass
class CodeAgreement:
    """Output codes of one tensor in two backends: how many agree and how far apart the rest are."""

    name: str
    op_type: str
    total: int = 0
    identical: int = 0
    max_difference: int = 0
    histogram: dict[int, int] = dataclasses.field(default_factory=dict)

    def add(self, expected: np.ndarray, got: np.ndarray) -> None:
        difference = np.abs(expected.astype(np.int64) - got.astype(np.int64))
        self.total += difference.size
        self.identical += int(np.count_nonzero(difference == 0))
        self.max_difference = max(self.max_difference, int(difference.max(initial=0)))
        values, counts = np.unique(difference, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            self.histogram[value] = self.histogram.get(value, 0) + count

    @property
    def identical_fraction(self) -> float:
        return self.identical / self.total if self.total else 1.0

    def as_dict(self) -> dict:
        return {"name": self.name, "op_type": self.op_type, "values": self.total,
                "identical": round(self.identical_fraction, 6), "max_lsb": self.max_difference}


@dataclasses.dataclass
class BackendAgreement:
    per_op: list[CodeAgreement]
    outputs: list[CodeAgreement]

    def overall(self) -> CodeAgreement:
        """Every integer op's output codes pooled."""
        pooled = CodeAgreement("all integer ops", "*")
        for op in self.per_op:
            pooled.total += op.total
            pooled.identical += op.identical
            pooled.max_difference = max(pooled.max_difference, op.max_difference)
            for value, count in op.histogram.items():
                pooled.histogram[value] = pooled.histogram.get(value, 0) + count
        return pooled

    def worst(self, count: int = 5) -> list[CodeAgreement]:
        return sorted(self.per_op, key=lambda a: (-a.max_difference, a.identical_fraction))[:count]


def _quantized_outputs(model: ir.Model) -> dict[str, str]:
    """Graph output name -> name of the codes it is dequantized from, where it is."""
    found = {}
    for value in model.graph.outputs:
        producer = value.producer()
        if producer is not None and producer.op_type == "DequantizeLinear":
            found[value.name] = producer.inputs[0].name
    return found


def backend_agreement(model: ir.Model | str | os.PathLike, samples: Samples, threads: int = DEFAULT_THREADS,
                      show_progress: bool = False) -> BackendAgreement:
    """Reference kernels vs ONNX Runtime on the same quantized model and samples (see module doc)."""
    model = as_model(model)
    reference = ReferenceSession(model)
    steps = reference.integer_steps
    values = {v.name: v for node in model.graph for v in node.outputs}
    # Codes made from float tensors (graph inputs, float ops) are forced too: they are the
    # boundary's, not a kernel's, and would otherwise carry earlier differences in.
    boundaries = [step.output.name for step in reference.steps if isinstance(step, QuantizeStep)]
    traced = [values[name] for name in [step.output for step in steps] + boundaries if name in values]
    session = session_with_outputs(model, traced, threads=threads)
    per_op = {step.output: CodeAgreement(step.node, step.op_type) for step in steps}
    codes_of = _quantized_outputs(model)
    outputs = {name: CodeAgreement(name, "output") for name in codes_of}
    for feeds in progress_bar(samples.batches(), samples.number_of_batches(), "agreement", show_progress):
        ort_values = session.run(feeds, [v.name for v in traced] + reference.output_names)
        env = reference.run_all(feeds)
        forced = dict(env)
        forced.update({name: value for name, value in ort_values.items() if name in per_op or name in boundaries})
        for step in steps:
            got = step.run([forced[name] for name in step.inputs])
            per_op[step.output].add(ort_values[step.output], got)
        for name, codes in codes_of.items():
            if codes in ort_values:
                outputs[name].add(ort_values[codes], env[codes])
    session.close()
    return BackendAgreement(list(per_op.values()), list(outputs.values()))

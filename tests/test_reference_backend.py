"""The integer reference backend against two other oracles: ONNX's reference evaluator and ONNX Runtime.

Each single-op test builds `Q -> DQ -> op -> Q` (weights as integer constants + DQ), checks the
op really ran as an integer step (not the float fallback), and compares its output codes with
the float evaluation of the same QDQ graph: differences are requantization roundings (eq. 11
vs eq. 5 / 12), at most 1 LSB, and table lookups and data movement are exact.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import onnx
import onnx.reference
import onnx_ir as ir
import pytest

import eightbit
from eightbit.api import load_samples
from eightbit.backends import OrtSession, ReferenceSession
from eightbit.backends.integer_ops import IntegerStep
from eightbit.demo import shipped_digits, shipped_model
from eightbit.ir import as_model
from eightbit.report.agreement import backend_agreement
from op_cases import CASES, qdq_model


@pytest.mark.parametrize("name", list(CASES))
def test_single_op_matches_the_onnx_reference_evaluator(name):
    case = CASES[name]
    model, feeds = qdq_model(case)
    session = ReferenceSession(model)
    assert [step.op_type for step in session.integer_steps] == [case.op_type], "the op must run as integers"
    got = session.run(feeds)["out"].astype(np.int64)
    expected = onnx.reference.ReferenceEvaluator(model).run(None, feeds)[0].astype(np.int64)
    assert got.shape == expected.shape
    difference = np.abs(got - expected)
    if case.exact:
        assert difference.max() == 0
    else:
        assert difference.max() <= 1
        assert np.mean(difference == 0) >= 0.95
    runtime = OrtSession(as_model(model)).run(feeds)["out"].astype(np.int64)
    assert np.abs(got - runtime).max() <= 1


def _is_integer(value) -> bool:
    if isinstance(value, (bool, int, str, type(None))):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "iub"
    if isinstance(value, np.integer):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_integer(v) for v in value)
    if dataclasses.is_dataclass(value):
        return all(_is_integer(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


@functools.cache
def _quantized_digits() -> ir.Model:
    return eightbit.quantize(shipped_model(), {"image": shipped_digits().x_train[:64]}, weight_range="7bit")


def test_kernels_receive_only_integers(monkeypatch):
    """Every parameter bound offline and every array passed at run time is an integer."""
    digits = shipped_digits()
    session = ReferenceSession(_quantized_digits())
    steps = session.integer_steps
    # The classifier's Gemm gives the float logits (eq. 7c): it runs as the graph says, on dequantized inputs.
    assert len(steps) >= 5 and [node.op_type for node in session.float_nodes] == ["Gemm"]
    for step in steps:
        assert step.fits_int32
        assert not step.compute.args
        for key, value in step.compute.keywords.items():
            assert _is_integer(value), f"{step.node}: parameter {key} is not an integer ({type(value)})"
    seen = []

    def checked(step: IntegerStep, original):
        def run(*arrays):
            assert all(np.asarray(a).dtype.kind in "iu" for a in arrays), f"{step.node} got a float array"
            result = original(*arrays)
            assert np.asarray(result).dtype.kind in "iu"
            seen.append(step.node)
            return result
        return functools.partial(run)

    for step in steps:
        monkeypatch.setattr(step, "compute", checked(step, step.compute))
    session.run({"image": digits.x_test[:8]})
    assert len(seen) == len(steps)


def test_reference_agrees_with_onnx_runtime_on_the_digits_model():
    """7-bit weights: ONNX Runtime's fused kernels are exact on any CPU, so only requantization differs."""
    digits = shipped_digits()
    quantized = _quantized_digits()
    result = backend_agreement(quantized, load_samples({"image": digits.x_test}, quantized))
    overall = result.overall()
    assert overall.total > 1_000_000
    assert overall.max_difference <= 1 and overall.identical_fraction >= 0.999
    scores = ReferenceSession(quantized).run({"image": digits.x_test})["logits"]
    float_scores = OrtSession(shipped_model()).run({"image": digits.x_test})["logits"]
    accuracy = np.mean(scores.argmax(-1) == digits.y_test)
    float_accuracy = np.mean(float_scores.argmax(-1) == digits.y_test)
    assert accuracy >= float_accuracy - 0.003


def test_float_ops_run_as_the_graph_says():
    """A model with no Q/DQ at all runs entirely through the float path and matches ONNX Runtime."""
    model = as_model(shipped_model())
    digits = shipped_digits()
    session = ReferenceSession(model)
    assert not session.integer_steps
    x = digits.x_test[:4]
    np.testing.assert_allclose(session.run({"image": x})["logits"], OrtSession(model).run({"image": x})["logits"],
                               rtol=1e-4, atol=1e-4)

"""The measurement context of one quantize call: candidates measured against the float model."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from conftest import small_cnn
from eightbit import api
from eightbit.backends.onnxruntime import OrtSession
from eightbit.ir import as_model
from eightbit.measure.context import Measure


def _quantized(tmp_path, data):
    path = tmp_path / "cnn.onnx"
    path.write_bytes(small_cnn().SerializeToString())
    api.quantize(path, {"x": data}, output=tmp_path / "q.onnx", min_sqnr="off", threads=1)
    return as_model(tmp_path / "q.onnx")


def test_a_candidate_measured_again_runs_only_the_batches_it_adds(tmp_path, monkeypatch):
    data = np.random.default_rng(0).normal(size=(12, 1, 3, 16, 16)).astype(np.float32)
    reference, quantized = as_model(small_cnn()), _quantized(tmp_path, data)
    samples = api.load_samples({"x": data}, reference)
    fresh = [Measure(samples, 1).worst_sqnr_db([quantized], reference, batches=n)[0] for n in (3, 9, 12)]

    runs = []
    run = OrtSession.run
    monkeypatch.setattr(OrtSession, "run", lambda self, *args: runs.append(1) or run(self, *args))
    measure = Measure(samples, 1)
    measure.worst_sqnr_db([quantized], reference, batches=9)  # the float model's 9 batches, the candidate's 9
    runs.clear()
    assert measure.worst_sqnr_db([quantized], reference, batches=3) == [fresh[0]]
    assert not runs  # its first 3 batches were measured already
    copy = ir.from_proto(ir.to_proto(quantized))  # the same bytes: the same candidate
    assert measure.worst_sqnr_db([copy], reference, batches=12) == [fresh[2]]
    assert len(runs) == 3 + 3  # the float model's 3 new batches, the candidate's 3 new ones
    assert measure.worst_sqnr_db([quantized], reference, batches=9) == [fresh[1]]

    runs.clear()
    copy.metadata_props["changed"] = "yes"  # other bytes: measured anew
    assert measure.worst_sqnr_db([copy], reference, batches=9) == [fresh[1]]
    assert len(runs) == 9

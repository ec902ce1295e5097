"""The default quantize depends on its input, its flags and the CPU's instruction set only: never on how busy the
machine is. And where the default floor is out of reach, the all-integer model comes back with the reason."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import onnx

import eightbit
from eightbit.api import fallback_of, float_nodes_of
from eightbit.cli import main
from eightbit.config import SCHEMES
from test_inspect import chain_cnn, images  # noqa: F401  (images: a fixture)

# A process that keeps one CPU busy until it is stopped, or its parent is.
BURNER = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"


def test_two_runs_one_beside_a_busy_cpu_write_the_same_bytes(tmp_path, images):  # noqa: F811
    source, data = tmp_path / "chain.onnx", tmp_path / "x.npz"
    onnx.save(chain_cnn(outlier=True), source)  # its floor takes a search: every probe is a chance to differ
    np.savez(data, **images)
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    assert main(["quantize", str(source), "--calibration", str(data), "-o", str(first), "-q", "--no-report"]) == 0
    burner = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        assert main(["quantize", str(source), "--calibration", str(data), "-o", str(second), "-q",
                     "--no-report"]) == 0
    finally:
        burner.kill()
        burner.wait()
    assert fallback_of(eightbit.ir.load_model(first)).kept  # the search ran
    assert first.read_bytes() == second.read_bytes()


def test_a_floor_out_of_reach_returns_the_all_integer_model_and_says_what_to_try(images):  # noqa: F811
    unreachable = dataclasses.replace(SCHEMES["eightbit"], default_min_sqnr_db=300.0)
    model = eightbit.quantize(chain_cnn(outlier=True), images, scheme=unreachable)
    fallback = fallback_of(model)
    assert fallback.budget.floor and not fallback.met and fallback.kept == []
    assert fallback.closest is not None and fallback.closest > fallback.before and fallback.closest_grids > 0
    assert not any("--min-sqnr" in node.reason for node in float_nodes_of(model))
    summary = fallback.summary()
    assert "NOT met; the all-integer model is returned" in summary
    assert "--impact" in summary and "--effort max" in summary and "finetune" in summary
    # a budget of the caller's own out of reach keeps the model measured closest to it, as asked
    asked = fallback_of(eightbit.quantize(chain_cnn(outlier=True), images, min_sqnr=300.0))
    assert not asked.met and asked.kept and asked.closest is None

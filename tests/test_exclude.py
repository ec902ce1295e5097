"""--exclude: the nodes named (names, globs, op types) keep float weights and arithmetic in every scheme."""

from __future__ import annotations

import json

import onnx_ir as ir
import pytest

from eightbit import api
from eightbit.api import FLOAT_NODES_KEY
from eightbit.cli import main


def _quantized_weight(model, name: str) -> bool:
    node = next(node for node in model.graph if node.name == name)
    producer = node.inputs[1].producer()
    return producer is not None and producer.op_type == "DequantizeLinear"


@pytest.mark.parametrize("scheme", ["eightbit", "weights", "dynamic"])
def test_excluded_nodes_keep_float_weights_and_are_listed_with_the_reason(cnn_path, cnn_data, scheme):
    model = api.quantize(cnn_path, cnn_data, scheme=scheme, exclude=("conv[2-9]", "Gemm"))
    by_name = {node.name: node for node in model.graph}
    assert by_name["conv2"].op_type == "Conv" and not _quantized_weight(model, "conv2")
    assert by_name["fc"].op_type == "Gemm" and not _quantized_weight(model, "fc")
    listed = {entry["name"]: entry["reason"] for entry in json.loads(model.metadata_props[FLOAT_NODES_KEY])}
    assert listed["conv2"] == "excluded (--exclude conv[2-9])" and listed["fc"] == "excluded (--exclude Gemm)"
    assert _quantized_weight(model, "conv1")  # the layer not excluded keeps its integer weights


def test_exclude_that_matches_nothing_is_refused_and_nothing_written(cnn_path, cnn_data, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    code = main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "--exclude", "conv1",
                 "--exclude", "cnov2"])
    assert code == 2 and not out.exists()
    error = capsys.readouterr().err.strip()
    assert "--exclude 'cnov2' matches no node" in error and len(error.splitlines()) == 1


def test_exclude_from_the_command_line_takes_several_patterns(cnn_path, cnn_data, tmp_path):
    out = tmp_path / "out.onnx"
    assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "--quiet",
                 "--exclude", "conv1", "fc"]) == 0
    model = ir.load(out)
    assert not _quantized_weight(model, "conv1") and not _quantized_weight(model, "fc")
    assert _quantized_weight(model, "conv2")

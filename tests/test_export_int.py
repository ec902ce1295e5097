"""`eightbit export-int`: the integer program is complete enough to recompute a layer without eightbit's runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

import eightbit
from eightbit.backends import ReferenceSession
from eightbit.backends.export import read_program
from eightbit.cli import main
from eightbit.demo import shipped_digits, shipped_model
from eightbit.kernels.conv import conv
from eightbit.quant.requantize import rounding_right_shift


@pytest.fixture(scope="module")
def po2_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("po2") / "digits.po2.onnx"
    eightbit.quantize(shipped_model(), {"image": shipped_digits().x_train[:128]}, scheme="po2", output=path)
    return path


def test_exported_shifts_recompute_the_first_convolution(po2_model, tmp_path, capsys):
    program_path = tmp_path / "program.npz"
    assert main(["export-int", str(po2_model), "-o", str(program_path)]) == 0
    assert "by a shift alone" in capsys.readouterr().out
    program, arrays = read_program(program_path)
    integer = [step for step in program["steps"] if step["kind"] == "integer"]
    assert [step["kind"] for step in program["steps"]].count("float") == 0
    first = integer[0]
    assert first["op_type"] == "Conv"
    params = first["params"]
    output = params["output"]
    assert "rounding_right_shift" in output
    weights = arrays[params["weights"]["array"]]
    bias = arrays[params["bias"]["array"]]
    shift = output["rounding_right_shift"]
    shift = arrays[shift["array"]] if isinstance(shift, dict) else shift

    session = ReferenceSession(eightbit.ir.load_model(po2_model))
    images = shipped_digits().x_test[:4]
    env = session.run_all({"image": images})
    x = env[first["inputs"][0]]
    acc = conv(x, params["x_zero_point"], weights, arrays[params["w_zero_point"]["array"]], bias,
               tuple(params["strides"]), tuple(params["pads"]), tuple(params["dilations"]), params["group"])
    shift = np.asarray(shift).reshape((1, -1, 1, 1)) if np.ndim(shift) else shift
    recomputed = np.clip(rounding_right_shift(acc, shift) + output["zero_point"], output["qmin"], output["qmax"])
    np.testing.assert_array_equal(recomputed, env[first["output"]])


def test_json_export_holds_the_same_program(po2_model, tmp_path):
    json_path, npz_path = tmp_path / "program.json", tmp_path / "program.npz"
    assert main(["export-int", str(po2_model), "-o", str(json_path)]) == 0
    assert main(["export-int", str(po2_model), "-o", str(npz_path)]) == 0
    as_json = json.loads(json_path.read_text())
    as_npz, arrays = read_program(npz_path)
    assert [s["kind"] for s in as_json["steps"]] == [s["kind"] for s in as_npz["steps"]]
    assert as_json["bias"]["bits"] == 16
    first_json = next(s for s in as_json["steps"] if s["kind"] == "integer")
    first_npz = next(s for s in as_npz["steps"] if s["kind"] == "integer")
    assert np.array_equal(np.array(first_json["params"]["weights"]), arrays[first_npz["params"]["weights"]["array"]])


def test_export_to_an_unknown_format_is_refused(po2_model, tmp_path):
    target = tmp_path / "program.txt"
    assert main(["export-int", str(po2_model), "-o", str(target)]) == 2
    assert not target.exists()

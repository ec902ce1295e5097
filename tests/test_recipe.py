"""Recipes: a run's options written as TOML, run again for the same bytes, edited for exactly the edited model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import eightbit
from conftest import make_model, small_cnn, tensor, value_info
from eightbit.cli import main
from eightbit.ir import load_model
from eightbit.pipeline.options import QuantizeOptions
from eightbit.recipe import read_recipe, recipe_text
from eightbit.record import float_nodes_of


@pytest.fixture
def run(tmp_path, cnn_data):
    """A quantize run of the small CNN that saved its recipe: (folder, model, calibration, recipe)."""
    model = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), model)
    recipe = tmp_path / "recipe.toml"
    assert main(["quantize", str(model), "--calibration", str(cnn_data), "--weight-rounding", "nearest",
                 "-o", str(tmp_path / "first.onnx"), "--save-recipe", str(recipe), "--no-report", "-q"]) == 0
    return tmp_path, model, cnn_data, recipe


def test_a_recipe_run_again_gives_the_same_bytes(run):
    folder, model, data, recipe = run
    assert 'weight_rounding = "nearest"' in recipe.read_text()
    assert main(["quantize", str(model), "--calibration", str(data), "--recipe", str(recipe),
                 "-o", str(folder / "again.onnx"), "--no-report", "-q"]) == 0
    assert (folder / "again.onnx").read_bytes() == (folder / "first.onnx").read_bytes()


def test_an_edited_recipe_gives_exactly_the_model_of_its_options(run):
    folder, model, data, recipe = run
    assert "conv2" not in {node.name for node in float_nodes_of(load_model(folder / "first.onnx"))}
    recipe.write_text(recipe.read_text() + '\n[nodes."conv2"]\nfloat = true\n')
    assert main(["quantize", str(model), "--calibration", str(data), "--recipe", str(recipe),
                 "-o", str(folder / "edited.onnx"), "--no-report", "-q"]) == 0
    eightbit.quantize(model, data, weight_rounding="nearest", exclude=["conv2"], output=folder / "asked.onnx")
    assert (folder / "edited.onnx").read_bytes() == (folder / "asked.onnx").read_bytes()
    assert "conv2" in {node.name for node in float_nodes_of(load_model(folder / "edited.onnx"))}


def test_a_flag_beside_a_recipe_is_refused(run, capsys):
    folder, model, data, recipe = run
    assert main(["quantize", str(model), "--calibration", str(data), "--recipe", str(recipe), "--scheme", "po2",
                 "-o", str(folder / "never.onnx")]) == 2
    assert "scheme given on the command line too" in capsys.readouterr().err
    assert not (folder / "never.onnx").exists()


@pytest.mark.parametrize("text, message", [
    ("format = 1\n[quantize]\nbits = 4\n", "unknown option(s) bits"),
    ('format = 1\n[quantize]\n[nodes."conv1"]\nbits = 4\n', "takes float and weight_bits only"),
    ('format = 1\n[quantize]\n[nodes."conv1"]\nweight_bits = 5\n', "weight_bits must be 4 or 8"),
    ('format = 1\n[quantize]\n[nodes."conv1"]\nweight_bits = 8\n', "set weight_bits = 4 in [quantize]"),
    ("format = 1\nquantize = [", "not a readable TOML recipe"),
    ("[quantize]\n", "not an eightbit recipe"),
])
def test_a_bad_recipe_is_one_line_naming_the_problem(run, capsys, text, message):
    folder, model, data, recipe = run
    recipe.write_text(text)
    assert main(["quantize", str(model), "--calibration", str(data), "--recipe", str(recipe),
                 "-o", str(folder / "never.onnx")]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (folder / "never.onnx").exists()


def test_options_round_trip_through_a_recipe(tmp_path):
    options = QuantizeOptions(scheme="po2", calibrate="percentile", min_sqnr_db=None, bias_correction=False,
                              exclude=("conv*", "Softmax"), target="tensorrt")
    path = tmp_path / "recipe.toml"
    path.write_text(recipe_text(options, [], []))
    read = read_recipe(path)
    assert (read.scheme, read.calibrate, read.min_sqnr_db, read.bias_correction, read.exclude, read.target) == \
        ("po2", "percentile", "off", False, ("conv*", "Softmax"), "tensorrt")
    assert recipe_text(read, [], []) == path.read_text()  # every other option as it was


def _two_matmuls(path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="second")]
    onnx.save(make_model(nodes, [value_info("x", ["batch", 64])], [value_info("y", ["batch", 32])],
                         [tensor("w1", rng.normal(0, 0.2, (64, 64)).astype(np.float32)),
                          tensor("w2", rng.normal(0, 0.2, (64, 32)).astype(np.float32))]), path)
    data = path.with_suffix(".npz")
    np.savez(data, x=rng.normal(0, 1, (16, 64)).astype(np.float32))
    return data


def test_a_recipe_gives_one_node_8_bit_blocks_under_4_bit_ones(tmp_path):
    model, recipe = tmp_path / "two.onnx", tmp_path / "two.toml"
    data = _two_matmuls(model)
    common = ["quantize", str(model), "--calibration", str(data), "--no-report", "-q"]
    assert main([*common, "--scheme", "weights", "--weight-bits", "4", "--save-recipe", str(recipe),
                 "-o", str(tmp_path / "four.onnx")]) == 0
    recipe.write_text(recipe.read_text() + '\n[nodes."second"]\nweight_bits = 8\n')
    assert main([*common, "--recipe", str(recipe), "-o", str(tmp_path / "mixed.onnx")]) == 0

    def bits(path):
        return {node.name: helper.get_attribute_value(next(a for a in node.attribute if a.name == "bits"))
                for node in onnx.load(path).graph.node if node.op_type == "MatMulNBits"}
    assert set(bits(tmp_path / "four.onnx").values()) == {4}
    mixed = bits(tmp_path / "mixed.onnx")
    assert mixed == {"first": 4, "second": 8}
    again = tmp_path / "again.toml"
    assert main([*common, "--recipe", str(recipe), "-o", str(tmp_path / "again.onnx"), "--save-recipe",
                 str(again)]) == 0
    assert read_recipe(again).eight_bit_weights == ("second",)  # kept in the recipe it writes


def test_inspect_writes_a_recipe_that_keeps_the_worst_layers_float(run, capsys):
    folder, model, data, recipe = run
    inspected = folder / "inspected.toml"
    assert main(["inspect", str(model), str(folder / "first.onnx"), "--data", str(data), "--recipe", str(recipe),
                 "--save-recipe", str(inspected), "--keep-float", "2"]) == 0
    kept = capsys.readouterr().out.split(f"wrote {inspected}: ")[1].split(" kept float")[0].split(", ")
    assert len(kept) == 2
    assert main(["quantize", str(model), "--calibration", str(data), "--recipe", str(inspected),
                 "-o", str(folder / "kept.onnx"), "--no-report", "-q"]) == 0
    assert set(kept) <= {node.name for node in float_nodes_of(load_model(folder / "kept.onnx"))}
    assert 'weight_rounding = "nearest"' in inspected.read_text()  # the run's own options, carried over


def test_the_recipe_given_is_never_overwritten(run, capsys):
    folder, model, data, recipe = run
    before = recipe.read_bytes()
    for flags in (["-o", str(recipe)], ["-o", str(folder / "x.onnx"), "--save-recipe", str(recipe)]):
        assert main(["quantize", str(model), "--calibration", str(data), "--recipe", str(recipe), *flags]) == 2
        assert "would overwrite an input" in capsys.readouterr().err
    assert recipe.read_bytes() == before

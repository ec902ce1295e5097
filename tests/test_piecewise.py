"""A model run in pieces gives what it gives run whole, and a shift of a kept output reaches the nodes after it."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper

import eightbit
from conftest import make_model, small_cnn, tensor, value_info
from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.backends.piecewise import PiecewiseRun
from eightbit.datasets import input_specs, samples_from_arrays
from eightbit.ir import as_model
from eightbit.ir.graph import constant_array


def _whole(model: ir.Model, samples, names: list[str]) -> dict[str, list[np.ndarray]]:
    values = {v.name: v for node in model.graph for v in node.outputs}
    session = session_with_outputs(model, [values[name] for name in names])
    try:
        runs = [session.run(feeds, names) for feeds in samples.batches()]
    finally:
        session.close()
    return {name: [run[name] for run in runs] for name in names}


def _images(count: int = 6) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).normal(0, 1, (count, 3, 16, 16)).astype(np.float32)}


@pytest.mark.parametrize("quantized", [False, True])
def test_every_node_output_is_what_the_whole_model_gives(quantized):
    images = _images()
    model = eightbit.quantize(small_cnn(), images) if quantized else as_model(small_cnn())
    samples = samples_from_arrays(images, input_specs(model))
    nodes = [node for node in model.graph if node.op_type in ("Conv", "Gemm", "Add", "Softmax")]
    whole = _whole(model, samples, [node.outputs[0].name for node in nodes])
    run = PiecewiseRun(model, samples)
    position = {node: index for index, node in enumerate(model.graph)}
    for node in nodes:
        name = node.outputs[0].name
        pieces = run.through(position[node], name)
        assert len(pieces) == len(whole[name])
        for piece, expected in zip(pieces, whole[name]):
            np.testing.assert_allclose(piece, expected, rtol=1e-5, atol=1e-5)


def test_a_shifted_output_reaches_the_nodes_after_it_as_a_moved_bias_would():
    images = _images()
    model = as_model(small_cnn(softmax=False))
    samples = samples_from_arrays(images, input_specs(model))
    conv2 = next(node for node in model.graph if node.name == "conv2")
    shift = np.linspace(-0.5, 0.5, 8)
    run = PiecewiseRun(model, samples)
    position = {node: index for index, node in enumerate(model.graph)}
    run.through(position[conv2], conv2.outputs[0].name)
    run.shift(conv2.outputs[0].name, shift)
    logits = run.through(len(position) - 1, "logits")

    bias = conv2.inputs[2]
    bias.const_value = ir.tensor((constant_array(bias) + shift).astype(np.float32), name=bias.name)
    expected = _whole(model, samples, ["logits"])["logits"]
    for piece, wanted in zip(logits, expected):
        np.testing.assert_allclose(piece, wanted, rtol=1e-5, atol=1e-5)


def test_a_node_already_run_is_refused():
    images = _images()
    model = as_model(small_cnn())
    run = PiecewiseRun(model, samples_from_arrays(images, input_specs(model)))
    nodes = list(model.graph)
    run.through(3, nodes[3].outputs[0].name)
    with pytest.raises(ValueError, match="has run already"):
        run.through(1, nodes[1].outputs[0].name)


def test_a_subgraph_reads_what_an_earlier_piece_made():
    """An If whose branches read a tensor of the outer graph: the piece holding it is given that tensor."""
    then_branch = helper.make_graph([helper.make_node("Add", ["r", "r"], ["doubled"])], "then", [],
                                    [value_info("doubled", None)])
    else_branch = helper.make_graph([helper.make_node("Neg", ["r"], ["negated"])], "else", [],
                                    [value_info("negated", None)])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Identity", ["x"], ["unused"], name="identity"),
        helper.make_node("If", ["flag"], ["y"], then_branch=then_branch, else_branch=else_branch, name="if"),
    ]
    model = as_model(make_model(nodes, [value_info("x", [2, 3])], [value_info("y", [2, 3])],
                                [tensor("flag", np.array(True))]))
    x = np.array([[-1.0, 0.5, 2.0], [3.0, -4.0, 0.0]], np.float32)
    samples = samples_from_arrays({"x": x[None]}, input_specs(model))
    run = PiecewiseRun(model, samples)
    run.through(1, "unused")
    (y,) = run.through(2, "y")
    np.testing.assert_array_equal(y, 2 * np.maximum(x, 0))

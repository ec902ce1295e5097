"""A model that is already QDQ: the converter keeps its grids and needs no calibration."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper

import eightbit
from conftest import make_model, tensor, value_info
from eightbit.backends import OrtSession, ReferenceSession
from eightbit.backends.reference import quantized_grid
from eightbit.errors import InputError

X_SCALE, X_ZERO = np.float32(1 / 64), np.uint8(128)
RELU_SCALE = np.float32(0.03)
POOL_SCALE, POOL_ZERO = np.float32(0.02), np.int8(-128)  # int8 codes: the u8 scheme stores them shifted
OUT_SCALE, OUT_ZERO = np.float32(0.05), np.uint8(100)


def hand_written_qdq(weight_codes: np.ndarray | None = None) -> tuple:
    """x -QDQ-> Conv (int8 per-channel weight codes, float bias) -> Relu -QDQ-> GlobalAveragePool -QDQ(int8)->
    Flatten -> Gemm (float weight -> Q -> DQ) -QDQ-> logits, as another tool could write it."""
    rng = np.random.default_rng(3)
    codes = rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8) if weight_codes is None else weight_codes
    w_scale = rng.uniform(0.002, 0.01, 4).astype(np.float32)
    fc_w = rng.normal(0, 0.5, (3, 4)).astype(np.float32)
    fc_scale = np.float32(np.abs(fc_w).max() / 127)
    inits = [
        tensor("x_scale", X_SCALE), tensor("x_zero", X_ZERO),
        tensor("w_codes", codes), tensor("w_scale", w_scale), tensor("w_zero", np.zeros(4, np.int8)),
        tensor("b", rng.normal(0, 0.05, 4).astype(np.float32)),
        tensor("relu_scale", RELU_SCALE), tensor("relu_zero", np.uint8(0)),
        tensor("pool_scale", POOL_SCALE), tensor("pool_zero", POOL_ZERO),
        tensor("fc_w", fc_w), tensor("fc_scale", fc_scale), tensor("fc_zero", np.int8(0)),
        tensor("fc_b", rng.normal(0, 0.05, 3).astype(np.float32)),
        tensor("out_scale", OUT_SCALE), tensor("out_zero", OUT_ZERO),
    ]
    q, dq = "QuantizeLinear", "DequantizeLinear"
    nodes = [
        helper.make_node(q, ["x", "x_scale", "x_zero"], ["xq"]),
        helper.make_node(dq, ["xq", "x_scale", "x_zero"], ["xd"]),
        helper.make_node(dq, ["w_codes", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("Conv", ["xd", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node(q, ["relu", "relu_scale", "relu_zero"], ["relu_q"]),
        helper.make_node(dq, ["relu_q", "relu_scale", "relu_zero"], ["relu_d"]),
        helper.make_node("GlobalAveragePool", ["relu_d"], ["pool"]),
        helper.make_node(q, ["pool", "pool_scale", "pool_zero"], ["pool_q"]),
        helper.make_node(dq, ["pool_q", "pool_scale", "pool_zero"], ["pool_d"]),
        helper.make_node("Flatten", ["pool_d"], ["flat"]),
        helper.make_node(q, ["fc_w", "fc_scale", "fc_zero"], ["fc_wq"]),
        helper.make_node(dq, ["fc_wq", "fc_scale", "fc_zero"], ["fc_wd"]),
        helper.make_node("Gemm", ["flat", "fc_wd", "fc_b"], ["fc"], transB=1),
        helper.make_node(q, ["fc", "out_scale", "out_zero"], ["fc_q"]),
        helper.make_node(dq, ["fc_q", "out_scale", "out_zero"], ["logits"]),
    ]
    model = make_model(nodes, [value_info("x", ["batch", 2, 6, 6])],
                       [value_info("logits", ["batch", 3])], inits)
    return model, codes, w_scale


def _grids(model) -> dict[str, tuple[float, int, str]]:
    """Activation grids of a converted model, keyed by the tensor each QuantizeLinear reads."""
    grids = {}
    for node in model.graph:
        if node.op_type == "QuantizeLinear":
            grid = quantized_grid(node, node.outputs[0].name)
            grids[node.inputs[0].name] = (grid.s, grid.zp, str(grid.zero_point.dtype))
    return grids


def test_a_qdq_model_is_converted_on_its_own_grids_without_calibration():
    model, codes, w_scale = hand_written_qdq()
    converted = eightbit.quantize(model)  # no calibration data
    grids = _grids(converted)
    assert grids["x"] == (X_SCALE, X_ZERO, "uint8")
    assert grids["relu"] == (RELU_SCALE, 0, "uint8")  # the Relu is fused into the conv's output grid
    assert grids["pool"] == (POOL_SCALE, int(POOL_ZERO) + 128, "uint8")  # the same grid, stored as u8
    assert grids["logits_float"] == (OUT_SCALE, OUT_ZERO, "uint8")  # the graph output keeps its name
    assert "Relu" not in [node.op_type for node in converted.graph]
    weight = next(n for n in converted.graph if n.op_type == "Conv").inputs[1].producer()
    np.testing.assert_array_equal(weight.inputs[0].const_value.numpy(), codes)
    np.testing.assert_array_equal(weight.inputs[1].const_value.numpy(), w_scale)
    assert converted.metadata_props["eightbit.weight_range"] == "weights on the grids the QDQ model gives"


def test_the_integer_model_computes_what_the_qdq_model_simulates():
    model, _, _ = hand_written_qdq()
    x = np.random.default_rng(0).uniform(-2, 2, (64, 2, 6, 6)).astype(np.float32)
    # "basic": no QDQ fusion, so ONNX Runtime computes the float simulation the QDQ model states.
    simulated = OrtSession(ir.from_proto(model), optimize="basic").run({"x": x})["logits"]
    integer = ReferenceSession(eightbit.quantize(model)).run({"x": x})["logits"]
    steps = np.abs(simulated - integer) / OUT_SCALE
    assert steps.max() <= 1.0 + 1e-4  # float sums vs exact integer sums: one rounding boundary at most
    assert np.mean(steps > 0.5) < 0.05


def test_a_grid_the_scheme_cannot_hold_is_refused_by_name():
    model, _, _ = hand_written_qdq()
    with pytest.raises(InputError, match="tensor 'relu'.*scheme 'po2': zero point -128 is not 0"):
        eightbit.quantize(model, scheme="po2")


def test_weight_codes_beyond_the_narrow_range_are_refused():
    codes = np.full((4, 2, 3, 3), -128, np.int8)
    model, _, _ = hand_written_qdq(codes)
    with pytest.raises(InputError, match="weight .* codes reach beyond"):
        eightbit.quantize(model)


def test_tensors_without_a_grid_still_need_calibration():
    model, _, _ = hand_written_qdq()
    # Take the pair off the pooled tensor: now it has no grid, and there is no data to find one.
    graph = model.graph
    for name in ("pool_q", "pool_d"):
        graph.node.remove(next(n for n in graph.node if n.output[0] == name))
    next(n for n in graph.node if n.op_type == "Flatten").input[0] = "pool"
    with pytest.raises(InputError, match="needs calibration data for tensors the model gives no Q/DQ grid: pool"):
        eightbit.quantize(model)
    x = np.random.default_rng(1).uniform(-2, 2, (16, 2, 6, 6)).astype(np.float32)
    converted = eightbit.quantize(model, {"x": x})
    assert _grids(converted)["x"] == (X_SCALE, X_ZERO, "uint8")


def _as_exported_by_pytorch(model):
    """hand_written_qdq's model as PyTorch's ONNX exporter writes it: the pool a ReduceMean over the spatial
    axes (axes as an input, opset 18), the flatten a Reshape."""
    graph = model.graph
    pool = next(n for n in graph.node if n.op_type == "GlobalAveragePool")
    pool.op_type = "ReduceMean"
    pool.input.append("spatial")
    graph.initializer.extend([tensor("spatial", np.array([-1, -2], np.int64)),
                              tensor("flat_shape", np.array([-1, 4], np.int64))])
    flatten = next(n for n in graph.node if n.op_type == "Flatten")
    flatten.op_type = "Reshape"
    flatten.input.append("flat_shape")
    model.opset_import[0].version = 18
    return model


def test_a_spatial_mean_and_a_reshape_after_a_pair_convert_as_the_pool_and_the_flatten_do():
    """The mean keeps its grid as the GlobalAveragePool it is, and the Reshape's output the grid of its input."""
    x = np.random.default_rng(1).uniform(-2, 2, (16, 2, 6, 6)).astype(np.float32)
    model, _, _ = hand_written_qdq()
    expected = ReferenceSession(eightbit.quantize(model)).run({"x": x})["logits"]
    converted = eightbit.quantize(_as_exported_by_pytorch(hand_written_qdq()[0]))  # still no calibration
    assert "ReduceMean" not in [node.op_type for node in converted.graph]
    np.testing.assert_array_equal(ReferenceSession(converted).run({"x": x})["logits"], expected)


def test_a_reshape_carries_its_inputs_grid_past_a_float_op():
    """A grid given on a float op's output (a ReduceMax) holds for the Reshape of it that an integer Gemm reads."""
    model = _as_exported_by_pytorch(hand_written_qdq()[0])
    mean = next(n for n in model.graph.node if n.op_type == "ReduceMean")
    mean.op_type = "ReduceMax"  # no integer kernel, and no pool to stand for it
    mean.input.pop()
    mean.attribute.extend([helper.make_attribute("axes", [2, 3])])
    model.opset_import[0].version = 17
    flatten = next(n for n in model.graph.node if n.op_type == "Reshape")
    converted = eightbit.quantize(model)  # no calibration: the Reshape's output has its input's grid
    assert _grids(converted)[flatten.output[0]] == (POOL_SCALE, int(POOL_ZERO) + 128, "uint8")

"""The weights scheme in blocks: the block math, both graph forms run by ONNX Runtime and by ONNX's reference
against the codes they store, eq. 34 on block grids, the options' refusals, and the shipped transformer."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import onnx_ir as ir
import pytest
from onnx import helper

from conftest import make_model, tensor, value_info
from eightbit import api
from eightbit.api import DECISIONS_KEY
from eightbit.backends import OrtSession
from eightbit.backends.reference import ReferenceSession
from eightbit.cli import main
from eightbit.config import IntegerFormat
from eightbit.demo import shipped_digits
from eightbit.errors import InputError
from eightbit.measure.metrics import sqnr_db
from eightbit.quant.blocks import as_unsigned, block_format, block_grid, dequantized, nearest_codes, packed
from eightbit.quant.rounding import error_feedback_codes, moments_error, output_error

DATA = Path(str(resources.files("eightbit") / "data"))


def _mixed_model(alpha_gemm: bool = False) -> onnx.ModelProto:
    """Gather (a 50 x 64 table) -> MatMul -> MatMul (96 inputs: not a multiple of 64) -> Gemm with a bias
    (transB) -> output y, or (`alpha_gemm`) -> a Gemm with alpha 2 (no runtime block form) -> y."""
    rng = np.random.default_rng(0)
    inits = [
        tensor("table", rng.normal(0, 1, (50, 64)).astype(np.float32)),
        tensor("w_in", rng.normal(0, 0.2, (64, 96)).astype(np.float32)),
        tensor("w_mm", rng.normal(0, 0.2, (96, 48)).astype(np.float32)),
        tensor("w_fc", rng.normal(0, 0.2, (32, 48)).astype(np.float32)),
        tensor("b_fc", rng.normal(0, 0.1, 32).astype(np.float32)),
        tensor("w_scaled", rng.normal(0, 0.2, (32, 16)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"], axis=0, name="embed"),
        helper.make_node("MatMul", ["embedded", "w_in"], ["widened"], name="widen"),
        helper.make_node("MatMul", ["widened", "w_mm"], ["mm"], name="mm"),
        helper.make_node("Gemm", ["mm", "w_fc", "b_fc"], ["fc" if alpha_gemm else "y"], transB=1, name="fc"),
    ]
    if alpha_gemm:
        nodes.append(helper.make_node("Gemm", ["fc", "w_scaled"], ["y"], alpha=2.0, name="scaled"))
    width = 16 if alpha_gemm else 32
    return make_model(nodes, [value_info("ids", ["batch"], onnx.TensorProto.INT64)],
                      [value_info("y", ["batch", width])], inits)


@pytest.fixture
def mixed(tmp_path):
    path = tmp_path / "mixed.onnx"
    onnx.save(_mixed_model(), path)
    ids = np.random.default_rng(1).integers(0, 50, 40).astype(np.int64)
    return path, ids


def test_block_codes_round_trip_within_half_a_step_and_pack_low_first():
    rows = np.random.default_rng(0).normal(0, 1, (5, 80)).astype(np.float32)
    for symmetric in (True, False):
        block = block_format(4, 32, symmetric)
        grid = block_grid(rows, block)
        assert grid.scale.shape == (5, 3)  # 80 inputs: two blocks of 32 and one of 16
        codes = nearest_codes(rows, grid, block.fmt)
        assert codes.min() >= block.fmt.qmin and codes.max() <= block.fmt.qmax
        step, _ = grid.per_input(80)
        assert np.all(np.abs(dequantized(codes, grid) - rows) <= step / 2 + 1e-6)
    assert packed(np.array([[1, 2, 3]], np.uint8), 4).tolist() == [[0x21, 0x03]]
    signed = IntegerFormat(bits=8, signed=True, symmetric=True, value_bits=4)
    assert as_unsigned(np.array([-8, 0, 7], np.int8), signed).tolist() == [0, 8, 15]


def test_eq34_on_block_grids_lowers_the_layer_error_below_nearest():
    rng = np.random.default_rng(2)
    mixing = rng.normal(0, 1, (64, 64))
    x = rng.normal(0, 1, (512, 64)) @ mixing  # correlated inputs: where eq. 34 has something to move
    h = x.T @ x / len(x)
    rows = rng.normal(0, 0.3, (16, 64)).astype(np.float32)
    block = block_format(4, 16, False)
    grid = block_grid(rows, block)
    scale, zero_point = grid.per_input(64)
    chosen = error_feedback_codes(rows, h, scale, zero_point, block.fmt).astype(np.int16)
    nearest = nearest_codes(rows, grid, block.fmt)
    assert chosen.min() >= 0 and chosen.max() <= 15
    assert output_error(rows, dequantized(chosen, grid), h) < 0.8 * output_error(rows, dequantized(nearest, grid), h)


def test_layer_error_over_diagonal_blocks_of_h_is_the_sum_over_the_blocks():
    rng = np.random.default_rng(4)
    rows, approximation, x = rng.normal(size=(5, 10)), rng.normal(size=(5, 10)), rng.normal(size=(30, 10))
    h = x.T @ x
    blocks = np.zeros((1, 2, 8, 8))
    blocks[0, 0], blocks[0, 1, :2, :2] = h[:8, :8], h[8:, 8:]
    expected = sum(output_error(rows[:, part], approximation[:, part], h[part, part])
                   for part in (slice(0, 8), slice(8, 10)))
    assert moments_error(rows, approximation, blocks) == pytest.approx(expected)
    assert moments_error(rows, approximation, h[None]) == pytest.approx(output_error(rows, approximation, h))


@pytest.mark.parametrize("bits, symmetric", [(4, False), (4, True), (8, True)])
def test_runtime_and_standard_forms_compute_the_same_codes(mixed, tmp_path, bits, symmetric):
    path, ids = mixed
    float_y = OrtSession(path).run({"ids": ids})["y"]
    # blocks of 16: every weight's inputs are whole blocks, as the standard form needs
    runtime = api.quantize(path, scheme="weights", weight_bits=bits, block_size=16, weight_symmetric=symmetric,
                           output=tmp_path / "runtime.onnx")
    standard = api.quantize(path, scheme="weights", weight_bits=bits, block_size=16, weight_symmetric=symmetric,
                            target="openvino", output=tmp_path / "standard.onnx")
    assert sorted(node.op_type for node in runtime.graph) == ["GatherBlockQuantized", *["MatMulNBits"] * 3]
    assert standard.opset_imports[""] == 21
    blocked = sum(node.op_type == "DequantizeLinear" and "block_size" in node.attributes for node in standard.graph)
    assert blocked == (3 if bits == 4 else 4)  # at 4 bits the table takes 8-bit codes per row
    by_runtime = OrtSession(tmp_path / "runtime.onnx").run({"ids": ids})["y"]
    assert sqnr_db(float_y, by_runtime) > (12 if bits == 4 else 30)  # four layers of random weights
    # ONNX's own reference reads the standard form: an independent reading of the same codes, against the
    # runtime form in float arithmetic (accuracy level 0: inputs not quantized at run time).
    exact = onnx.load(tmp_path / "runtime.onnx")
    for node in exact.graph.node:
        for attribute in node.attribute:
            if attribute.name == "accuracy_level":
                attribute.i = 0
    by_reference = onnx.reference.ReferenceEvaluator(onnx.load(tmp_path / "standard.onnx")).run(None, {"ids": ids})[0]
    onnx.save(exact, tmp_path / "exact.onnx")
    assert sqnr_db(by_reference, OrtSession(tmp_path / "exact.onnx").run({"ids": ids})["y"]) > 60
    assert sqnr_db(by_reference, by_runtime) > 25  # the runtime's int8 inputs


def test_the_standard_form_blocks_only_weights_of_whole_blocks(mixed, tmp_path):
    path, ids = mixed
    model = api.quantize(path, scheme="weights", weight_bits=4, block_size=32, target="openvino",
                         output=tmp_path / "q.onnx")
    forms = {node.name: dict(node.inputs[1].producer().attributes) for node in model.graph if node.op_type in
             ("MatMul", "Gemm")}
    assert "block_size" in forms["widen"] and "block_size" in forms["mm"]  # 64 and 96 inputs
    assert "block_size" not in forms["fc"] and forms["fc"]["axis"].value == 0  # 48: per channel instead
    assert sqnr_db(OrtSession(path).run({"ids": ids})["y"], OrtSession(tmp_path / "q.onnx").run({"ids": ids})["y"]) > 12


def test_a_gemm_the_runtime_operator_cannot_compute_keeps_eight_bits_per_channel(tmp_path):
    path = tmp_path / "alpha.onnx"
    onnx.save(_mixed_model(alpha_gemm=True), path)
    model = api.quantize(path, scheme="weights", weight_bits=4, output=tmp_path / "q.onnx")
    scaled = next(node for node in model.graph if node.name == "scaled")
    assert scaled.op_type == "Gemm" and scaled.inputs[1].producer().op_type == "DequantizeLinear"
    assert "block_size" not in scaled.inputs[1].producer().attributes


def test_four_bit_blocks_shrink_matmul_weights_past_a_quarter_of_float(tmp_path):
    rng = np.random.default_rng(3)
    weights = [tensor(f"w{i}", rng.normal(0, 0.05, (256, 256)).astype(np.float32)) for i in range(4)]
    nodes = [helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"h{i + 1}"], name=f"mm{i}") for i in range(4)]
    path = tmp_path / "stack.onnx"
    onnx.save(make_model(nodes, [value_info("h0", ["batch", 256])], [value_info("h4", ["batch", 256])], weights), path)
    api.quantize(path, scheme="weights", weight_bits=4, output=tmp_path / "q.onnx")
    # 4 bits a weight, and a float32 scale and a 4-bit zero point per 32 weights: 0.160 of float32
    assert (tmp_path / "q.onnx").stat().st_size < 0.165 * path.stat().st_size


@pytest.mark.parametrize("flags, message", [
    (["--weight-bits", "3"], "--weight-bits 3: give one of 4, 8"),
    (["--block-size", "48"], "--block-size 48: give one of"),
    (["--scheme", "eightbit", "--weight-bits", "4"], "weights in blocks are for --scheme weights"),
    (["--weight-bits", "4", "--weight-granularity", "per_tensor"], "give one of them"),
    (["--weight-symmetric"], "give --block-size too"),
])
def test_block_options_refused_with_one_line_and_nothing_written(mixed, tmp_path, capsys, flags, message):
    path, _ = mixed
    out = tmp_path / "out.onnx"
    scheme = [] if "--scheme" in flags else ["--scheme", "weights"]
    assert main(["quantize", str(path), "-o", str(out), *scheme, *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not out.exists()


def test_transformer_in_four_bit_blocks_agrees_with_float(tmp_path):
    digits = shipped_digits()
    rows = digits.x_test[:, 0]
    float_logits = OrtSession(DATA / "digits_transformer.onnx").run({"rows": rows})["logits"]
    model = api.quantize(DATA / "digits_transformer.onnx", {"rows": digits.x_train[:64, 0]}, scheme="weights",
                         weight_bits=4, output=tmp_path / "q.onnx")
    logits = OrtSession(tmp_path / "q.onnx").run({"rows": rows})["logits"]
    assert sum(node.op_type == "MatMulNBits" for node in model.graph) == 13
    assert sqnr_db(float_logits, logits) > 30  # 39 dB as built; nearest codes alone give 29.5
    assert np.mean(logits.argmax(1) == float_logits.argmax(1)) >= 0.98
    assert (tmp_path / "q.onnx").stat().st_size < 0.25 * (DATA / "digits_transformer.onnx").stat().st_size


@pytest.mark.parametrize("scheme", ["dynamic", "weights"])
def test_embedding_tables_are_gathered_from_8bit_codes_in_every_weight_scheme(tmp_path, scheme):
    rng = np.random.default_rng(5)
    inits = [tensor("table", rng.normal(0, 1, (1000, 96)).astype(np.float32)),  # rows of 3 blocks of 32
             tensor("w", rng.normal(0, 0.1, (96, 64)).astype(np.float32)),
             tensor("odd", rng.normal(0, 1, (50, 100)).astype(np.float32))]  # no block size divides 100
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0, name="embed"),
             helper.make_node("MatMul", ["e", "w"], ["y"], name="mm"),
             helper.make_node("Gather", ["odd", "other"], ["z"], axis=0, name="odd_embed")]
    path = tmp_path / "embed.onnx"
    onnx.save(make_model(nodes, [value_info("ids", ["b", 7], onnx.TensorProto.INT64),
                                 value_info("other", ["b"], onnx.TensorProto.INT64)],
                         [value_info("y", ["b", 7, 64]), value_info("z", ["b", 100])], inits), path)
    feeds = {"ids": rng.integers(0, 1000, (3, 7)), "other": rng.integers(0, 50, 3)}
    expected = OrtSession(path).run(feeds)
    model = api.quantize(path, scheme=scheme, output=tmp_path / "q.onnx")
    got = OrtSession(tmp_path / "q.onnx").run(feeds)
    by_name = {node.name: node for node in model.graph}
    assert by_name["embed"].op_type == "GatherBlockQuantized"
    assert by_name["odd_embed"].op_type == "Gather" and by_name["odd_embed"].inputs[0].producer().op_type == \
        "DequantizeLinear"
    for name in ("y", "z"):
        assert sqnr_db(expected[name], got[name]) > 38
    assert (tmp_path / "q.onnx").stat().st_size < 0.3 * path.stat().st_size


@pytest.mark.parametrize("elem_type", [onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16])
def test_a_half_precision_model_in_blocks_is_its_float32_twin_in_blocks(mixed, tmp_path, elem_type):
    """Weights rounded to half first, the float32 twin is the same function: the same block nodes come out,
    with one Cast per input and output, agreeing as closely."""
    path, ids = mixed
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    half = onnx.load(path)
    for index, weight in enumerate(half.graph.initializer):
        half.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(
            onnx.numpy_helper.to_array(weight).astype(dtype), weight.name))
    half.graph.output[0].type.tensor_type.elem_type = elem_type
    twin = onnx.ModelProto()
    twin.CopyFrom(half)
    for index, weight in enumerate(twin.graph.initializer):
        twin.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(
            onnx.numpy_helper.to_array(weight).astype(np.float32), weight.name))
    twin.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.save(half, tmp_path / "half.onnx")
    onnx.save(twin, tmp_path / "twin.onnx")
    quantized = api.quantize(tmp_path / "half.onnx", scheme="weights", weight_bits=4, output=tmp_path / "qh.onnx")
    reference = api.quantize(tmp_path / "twin.onnx", scheme="weights", weight_bits=4, output=tmp_path / "qt.onnx")
    ops = [node.op_type for node in quantized.graph]
    assert ops[-1] == "Cast" and ops[:-1] == [node.op_type for node in reference.graph]
    assert quantized.graph.outputs[0].dtype == ir.DataType(elem_type)
    if elem_type == onnx.TensorProto.BFLOAT16:
        return  # ONNX Runtime's Python API gives no bfloat16 arrays; the graph before the Cast is the twin's
    got = OrtSession(tmp_path / "qh.onnx").run({"ids": ids})["y"].astype(np.float32)
    expected = OrtSession(tmp_path / "qt.onnx").run({"ids": ids})["y"]
    np.testing.assert_allclose(got, expected, atol=np.abs(expected).max() * 2.0 ** -10)


@pytest.mark.parametrize("bits, symmetric", [(4, False), (8, True)])
def test_reference_kernels_compute_the_block_operators_as_onnx_runtime_does(mixed, tmp_path, bits, symmetric):
    path, ids = mixed
    api.quantize(path, scheme="weights", weight_bits=bits, block_size=32, weight_symmetric=symmetric,
                 output=tmp_path / "q.onnx")
    exact = onnx.load(tmp_path / "q.onnx")
    for node in exact.graph.node:  # float arithmetic, as the reference computes: inputs not rounded to int8
        for attribute in node.attribute:
            if attribute.name == "accuracy_level":
                attribute.i = 0
    onnx.save(exact, tmp_path / "exact.onnx")
    by_runtime = OrtSession(tmp_path / "exact.onnx").run({"ids": ids})["y"]
    by_reference = ReferenceSession(tmp_path / "q.onnx").run({"ids": ids})["y"]
    np.testing.assert_allclose(by_reference, by_runtime, rtol=1e-4, atol=1e-4 * np.abs(by_runtime).max())


def test_the_reference_backend_names_an_operator_it_has_no_kernel_for(tmp_path):
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain="com.microsoft", name="fused")
    graph = helper.make_graph([node], "g", [value_info("a", [2, 3])], [value_info("y", [2, 2])],
                              [tensor("b", np.ones((3, 2), np.float32))])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(InputError, match="no com.microsoft.FusedMatMul; run with --backend ort"):
        ReferenceSession(tmp_path / "m.onnx")


def test_min_sqnr_gives_the_fewest_weights_8_bit_blocks_that_reach_it(tmp_path):
    digits = shipped_digits()
    calibration = {"rows": digits.x_train[:64, 0]}
    source = DATA / "digits_transformer.onnx"
    plain = api.quantize(source, calibration, scheme="weights", weight_bits=4)
    decisions = json.loads(plain.metadata_props[DECISIONS_KEY])
    assert not any(d["step"] == "weight bits" for d in decisions)  # no budget asked: every weight 4-bit
    sizes = {}
    for limit in (43.0, 60.0):
        model = api.quantize(source, calibration, scheme="weights", weight_bits=4, min_sqnr=limit,
                             output=tmp_path / f"{limit}.onnx")
        bits = {node.attributes["bits"].value for node in model.graph if node.op_type == "MatMulNBits"}
        taken = next(d["taken"] for d in json.loads(model.metadata_props[DECISIONS_KEY]) if d["step"] == "weight bits")
        sizes[limit] = (tmp_path / f"{limit}.onnx").stat().st_size
        if limit == 43.0:  # met with some weights 8-bit, others 4-bit
            assert bits == {4, 8} and "meets --min-sqnr 43" in taken
        else:  # out of reach: every weight 8-bit, and said so
            assert bits == {8} and "13 of 13" in taken and "falls short" in taken
    assert sizes[43.0] < sizes[60.0]


def test_min_sqnr_is_refused_for_per_channel_weights_and_with_nearest_codes(capsys, tmp_path):
    source = str(DATA / "digits_transformer.onnx")
    digits = shipped_digits()
    np.savez(tmp_path / "cal.npz", rows=digits.x_train[:16, 0])
    for flags, message in ((["--min-sqnr", "30"], "not to --scheme weights without --weight-bits 4"),
                           (["--weight-bits", "4", "--min-sqnr", "30", "--weight-rounding", "nearest"],
                            "does not read: drop one of the two")):
        out = tmp_path / "out.onnx"
        assert main(["quantize", source, "-o", str(out), "--scheme", "weights", "--calibration",
                     str(tmp_path / "cal.npz"), *flags]) == 2
        assert message in capsys.readouterr().err and not out.exists()


def test_the_static_scheme_gathers_embedding_rows_from_8bit_codes_too(tmp_path):
    rng = np.random.default_rng(6)
    inits = [tensor("table", rng.normal(0, 1, (1000, 96)).astype(np.float32)),
             tensor("w", rng.normal(0, 0.1, (96, 64)).astype(np.float32))]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0, name="embed"),
             helper.make_node("MatMul", ["e", "w"], ["y"], name="mm")]
    path = tmp_path / "embed.onnx"
    onnx.save(make_model(nodes, [value_info("ids", ["b", 7], onnx.TensorProto.INT64)], [value_info("y", ["b", 7, 64])],
                         inits), path)
    ids = rng.integers(0, 1000, (32, 7))
    model = api.quantize(path, {"ids": ids}, output=tmp_path / "q.onnx")
    assert {node.name: node.op_type for node in model.graph}["embed"] == "GatherBlockQuantized"
    decisions = json.loads(model.metadata_props[DECISIONS_KEY])
    assert {"step": "embeddings", "taken": "1 table 8-bit"} in decisions
    expected, got = (OrtSession(p).run({"ids": ids[:4]})["y"] for p in (path, tmp_path / "q.onnx"))
    assert sqnr_db(expected, got) > 30
    assert (tmp_path / "q.onnx").stat().st_size < 0.3 * path.stat().st_size

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper

import eightbit
from conftest import make_model, small_cnn, tensor, value_info
from eightbit.api import prepare
from eightbit.ir import model_to_bytes
from eightbit.passes import FoldAffineIntoConv, FoldBatchNorm, FoldConstants, FuseHardSwish, RemoveIdentity, SumToAdd
from eightbit.passes.fold_input_affine import FoldAffineIntoNextConv
from eightbit.passes.matmul_as_gemm import MatMulBiasAsGemm


def run(model, feeds):
    data = model_to_bytes(model) if isinstance(model, ir.Model) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def ops(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def check_equivalent(proto, rewrite, feeds, rtol=1e-4, atol=1e-5):
    before = run(proto, feeds)
    model = ir.serde.deserialize_model(proto)
    rewrite(model)
    after = run(model, feeds)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    return model


def x_of(shape, seed=0):
    return {"x": np.random.default_rng(seed).normal(size=shape).astype(np.float32)}


def test_batchnorm_folds_into_conv_and_output_is_unchanged():
    model = check_equivalent(small_cnn(), FoldBatchNorm(), x_of((2, 3, 16, 16)))
    assert "BatchNormalization" not in ops(model)


def test_batchnorm_after_a_non_linear_op_stays():
    rng = np.random.default_rng(0)
    params = [tensor(n, rng.uniform(0.5, 1.5, 4).astype(np.float32)) for n in ("s", "b", "m", "v")]
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["y"])],
        [value_info("x", [1, 4, 3, 3])], [value_info("y", [1, 4, 3, 3])], params,
    )
    model = check_equivalent(proto, FoldBatchNorm(), x_of((1, 4, 3, 3)))
    assert "BatchNormalization" in ops(model)


def test_batchnorm_folds_into_gemm_and_matmul():
    rng = np.random.default_rng(0)
    bn = [tensor(n, rng.uniform(0.5, 1.5, 5).astype(np.float32)) for n in ("s", "b", "m", "v")]
    for node in (helper.make_node("Gemm", ["x", "w"], ["h"]), helper.make_node("MatMul", ["x", "w"], ["h"])):
        proto = make_model(
            [node, helper.make_node("BatchNormalization", ["h", "s", "b", "m", "v"], ["y"])],
            [value_info("x", [2, 3])], [value_info("y", [2, 5])],
            [tensor("w", rng.normal(size=(3, 5)).astype(np.float32)), *bn],
        )
        model = check_equivalent(proto, FoldBatchNorm(), x_of((2, 3)))
        assert ops(model) == ["Gemm"]


def test_per_channel_mul_and_add_fold_into_conv():
    rng = np.random.default_rng(0)
    proto = make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("Mul", ["scale", "c"], ["m"]),
         helper.make_node("Add", ["m", "shift"], ["y"])],
        [value_info("x", [1, 2, 5, 5])], [value_info("y", [1, 4, 3, 3])],
        [tensor("w", rng.normal(size=(4, 2, 3, 3)).astype(np.float32)),
         tensor("scale", rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32)),
         tensor("shift", np.float32(0.25))],
    )
    model = check_equivalent(proto, FoldAffineIntoConv(), x_of((1, 2, 5, 5)))
    assert ops(model) == ["Conv"]
    assert model.graph.outputs[0].name == "y"


def test_spatially_varying_mul_does_not_fold():
    rng = np.random.default_rng(0)
    proto = make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "scale"], ["y"])],
        [value_info("x", [1, 2, 5, 5])], [value_info("y", [1, 4, 3, 3])],
        [tensor("w", rng.normal(size=(4, 2, 3, 3)).astype(np.float32)),
         tensor("scale", rng.uniform(0.5, 2, (1, 1, 1, 3)).astype(np.float32))],
    )
    model = check_equivalent(proto, FoldAffineIntoConv(), x_of((1, 2, 5, 5)))
    assert ops(model) == ["Conv", "Mul"]


def _affine_before_conv(pads: list[int], group: int = 1, shift_first: bool = False) -> onnx.ModelProto:
    """x -> Relu -> Mul(scale) -> Add(shift) -> Conv (or Add then Mul): a learned scale and shift after an
    activation, read by a convolution."""
    rng = np.random.default_rng(1)
    affine = [helper.make_node("Mul", ["r", "scale"], ["m"]), helper.make_node("Add", ["m", "shift"], ["a"])]
    if shift_first:
        affine = [helper.make_node("Add", ["r", "shift"], ["m"]), helper.make_node("Mul", ["scale", "m"], ["a"])]
    return make_model(
        [helper.make_node("Relu", ["x"], ["r"]), *affine,
         helper.make_node("Conv", ["a", "w", "b"], ["y"], pads=pads, group=group)],
        [value_info("x", [1, 4, 5, 5])], [value_info("y", [1, 4, 5 + pads[0] * 2 - 2, 5 + pads[0] * 2 - 2])],
        [tensor("w", rng.normal(size=(4, 4 // group, 3, 3)).astype(np.float32)),
         tensor("b", rng.normal(size=4).astype(np.float32)),
         tensor("scale", rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32)),
         tensor("shift", rng.normal(size=(4, 1, 1)).astype(np.float32))],
    )


def test_scale_and_shift_before_a_conv_that_pads_nothing_fold_into_it():
    for group in (1, 2, 4):
        for shift_first in (False, True):
            model = check_equivalent(_affine_before_conv([0, 0, 0, 0], group, shift_first), FoldAffineIntoNextConv(),
                                     x_of((1, 4, 5, 5)))
            assert ops(model) == ["Relu", "Conv"]


def test_before_a_padding_conv_only_the_scale_folds_and_the_shift_moves_before_it():
    # zero padding of Conv(x + b) pads with -b in x's terms: the shift cannot enter the bias exactly
    model = check_equivalent(_affine_before_conv([1, 1, 1, 1], group=4), FoldAffineIntoNextConv(), x_of((1, 4, 5, 5)))
    assert ops(model) == ["Relu", "Add", "Conv"]
    model = check_equivalent(_affine_before_conv([1, 1, 1, 1], shift_first=True), FoldAffineIntoNextConv(),
                             x_of((1, 4, 5, 5)))
    assert ops(model) == ["Relu", "Add", "Conv"]


def test_spatially_varying_shift_before_a_conv_stays():
    proto = _affine_before_conv([0, 0, 0, 0])
    varying = np.random.default_rng(2).normal(size=(4, 5, 5)).astype(np.float32)
    proto.graph.initializer[3].CopyFrom(tensor("shift", varying))
    model = check_equivalent(proto, FoldAffineIntoNextConv(), x_of((1, 4, 5, 5)))
    assert ops(model) == ["Relu", "Mul", "Add", "Conv"]


def test_constants_fold_and_identity_and_dropout_disappear():
    proto = make_model(
        [helper.make_node("Constant", [], ["two"], value=tensor("v", np.float32(2.0))),
         helper.make_node("Mul", ["two", "three"], ["six"]),
         helper.make_node("Identity", ["x"], ["i"]),
         helper.make_node("Dropout", ["i"], ["d"]),
         helper.make_node("Add", ["d", "six"], ["y"])],
        [value_info("x", [2])], [value_info("y", [2])], [tensor("three", np.float32(3.0))],
    )
    model = check_equivalent(proto, lambda m: (FoldConstants()(m), RemoveIdentity()(m)), x_of((2,)))
    assert ops(model) == ["Add"]
    assert float(model.graph.node(0).inputs[1].const_value.numpy()) == 6.0


def test_identity_feeding_a_graph_output_keeps_the_output_name():
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])],
        [value_info("x", [2])], [value_info("y", [2])],
    )
    model = check_equivalent(proto, RemoveIdentity(), x_of((2,)))
    assert ops(model) == ["Relu"] and model.graph.outputs[0].name == "y"


def test_hardswish_spellings_fuse_into_one_op():
    consts = [tensor("three", np.float32(3)), tensor("zero", np.float32(0)), tensor("six", np.float32(6))]
    arithmetic = make_model(
        [helper.make_node("Add", ["x", "three"], ["a"]),
         helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
         helper.make_node("Mul", ["x", "c"], ["m"]),
         helper.make_node("Div", ["m", "six"], ["y"])],
        [value_info("x", [1, 8])], [value_info("y", [1, 8])], consts,
    )
    with_hardsigmoid = make_model(
        [helper.make_node("HardSigmoid", ["x"], ["g"], alpha=1 / 6, beta=0.5),
         helper.make_node("Mul", ["x", "g"], ["y"])],
        [value_info("x", [1, 8])], [value_info("y", [1, 8])],
    )
    for proto in (arithmetic, with_hardsigmoid):
        model = check_equivalent(proto, FuseHardSwish(), {"x": np.linspace(-5, 5, 8, dtype=np.float32)[None]})
        assert ops(model) == ["HardSwish"]


def test_hard_sigmoid_spelling_fuses():
    consts = [tensor("three", np.float32(3)), tensor("zero", np.float32(0)), tensor("six", np.float32(6))]
    proto = make_model(
        [helper.make_node("Add", ["x", "three"], ["a"]),
         helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
         helper.make_node("Div", ["c", "six"], ["y"])],
        [value_info("x", [1, 8])], [value_info("y", [1, 8])], consts,
    )
    model = check_equivalent(proto, FuseHardSwish(), {"x": np.linspace(-5, 5, 8, dtype=np.float32)[None]})
    assert ops(model) == ["HardSigmoid"]


def test_sum_becomes_binary_adds():
    proto = make_model(
        [helper.make_node("Sum", ["x", "x", "x"], ["y"])], [value_info("x", [3])], [value_info("y", [3])]
    )
    model = check_equivalent(proto, SumToAdd(), x_of((3,)))
    assert ops(model) == ["Add", "Add"]


def test_matmul_and_bias_add_become_one_gemm_for_2d_inputs_only():
    rng = np.random.default_rng(5)
    inits = [tensor("w", rng.normal(size=(6, 4)).astype(np.float32)),
             tensor("b", rng.normal(size=(1, 4)).astype(np.float32))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"], name="fc"), helper.make_node("Add", ["b", "p"], ["y"])]
    flat = make_model(nodes, [value_info("x", ["n", 6])], [value_info("y", ["n", 4])], inits)
    model = check_equivalent(flat, MatMulBiasAsGemm(), x_of((3, 6)))
    assert ops(model) == ["Gemm"] and next(iter(model.graph)).name == "fc"
    assert [v.name for v in model.graph.outputs] == ["y"]
    batched = make_model(nodes, [value_info("x", [2, "n", 6])], [value_info("y", [2, "n", 4])], inits)
    model = check_equivalent(batched, MatMulBiasAsGemm(), x_of((2, 3, 6)))
    assert ops(model) == ["MatMul", "Add"]  # Gemm takes 2-D inputs only


def test_prepare_keeps_the_model_equivalent():
    proto = small_cnn()
    model = check_equivalent(proto, prepare, x_of((2, 3, 16, 16)))
    assert ops(model) == ["Conv", "Relu", "Conv", "Clip", "Add", "MaxPool", "GlobalAveragePool", "Flatten",
                          "Gemm", "Softmax"]
    onnx.checker.check_model(ir.to_proto(model))


def test_batchnorm_after_a_separate_bias_add_folds():
    # How exported detectors write ConvTranspose -> bias -> BN -> Relu.
    rng = np.random.default_rng(3)
    bn = [tensor(name, rng.uniform(0.5, 1.5, 4).astype(np.float32)) for name in ("g", "b", "m", "v")]
    proto = make_model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["t"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("Add", ["t", "bias"], ["tb"]),
         helper.make_node("BatchNormalization", ["tb", "g", "b", "m", "v"], ["n"]),
         helper.make_node("Relu", ["n"], ["y"])],
        [value_info("x", [1, 3, 4, 4])], [value_info("y", [1, 4, 8, 8])],
        [tensor("w", rng.normal(size=(3, 4, 2, 2)).astype(np.float32)),
         tensor("bias", rng.normal(size=(4, 1, 1)).astype(np.float32)), *bn],
    )
    model = check_equivalent(proto, prepare, x_of((1, 3, 4, 4)))
    assert ops(model) == ["ConvTranspose", "Relu"]


def test_quantized_tensors_keep_the_float_models_names():
    """Folding Conv+BN and fusing Relu/Clip leave each quantized tensor named as the float model
    names the tensor whose values it holds."""
    model = small_cnn()
    samples = {"x": np.random.default_rng(5).normal(0, 1, (16, 3, 16, 16)).astype(np.float32)}
    quantized = ir.to_proto(eightbit.quantize(model, samples))
    float_names = {name for node in model.graph.node for name in node.output} | {"x"}
    sources = [node.input[0] for node in quantized.graph.node if node.op_type == "QuantizeLinear"
               and node.input[0] not in {i.name for i in quantized.graph.initializer}]
    assert {"r1", "r2", "sum", "pool", "gap", "flat"} <= set(sources)
    graph_outputs = {o.name for o in quantized.graph.output}
    for name in sources:
        assert name in float_names or name.removesuffix("_float") in graph_outputs


def _shuffle_net(groups=3, per_group=4, shuffles=1):
    """Conv → channel shuffle (Reshape, Transpose, Reshape), `shuffles` times → depthwise Conv, as ShuffleNet
    writes it."""
    rng = np.random.default_rng(0)
    channels = groups * per_group
    params = [tensor("w1", rng.normal(0, 0.5, (channels, 3, 1, 1)).astype(np.float32)),
              tensor("w2", rng.normal(0, 0.5, (channels, 1, 3, 3)).astype(np.float32)),
              tensor("split", np.array([1, groups, per_group, 6, 6], np.int64)),
              tensor("merge", np.array([1, -1, 6, 6], np.int64))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["r0"])]
    for k in range(shuffles):
        nodes += [helper.make_node("Reshape", [f"r{k}", "split"], [f"s{k}"]),
                  helper.make_node("Transpose", [f"s{k}"], [f"t{k}"], perm=[0, 2, 1, 3, 4]),
                  helper.make_node("Reshape", [f"t{k}", "merge"], [f"r{k + 1}"])]
    nodes.append(helper.make_node("Conv", [f"r{shuffles}", "w2"], ["y"], group=channels, pads=[1, 1, 1, 1]))
    return make_model(nodes, [value_info("x", [1, 3, 6, 6])], [value_info("y", [1, channels, 6, 6])], params)


def test_channel_shuffle_becomes_one_gather_with_the_same_output():
    from eightbit.passes.channel_shuffle import ChannelShuffleAsGather

    proto = onnx.shape_inference.infer_shapes(_shuffle_net())
    model = check_equivalent(proto, ChannelShuffleAsGather(), x_of((1, 3, 6, 6)), rtol=0, atol=0)
    assert ops(model) == ["Conv", "Relu", "Gather", "Conv"]


def test_channel_shuffles_of_one_shape_share_one_order():
    from eightbit.passes.channel_shuffle import ChannelShuffleAsGather

    proto = onnx.shape_inference.infer_shapes(_shuffle_net(shuffles=2))
    model = check_equivalent(proto, ChannelShuffleAsGather(), x_of((1, 3, 6, 6)), rtol=0, atol=0)
    gathers = [node for node in model.graph if node.op_type == "Gather"]
    assert len(gathers) == 2 and gathers[0].inputs[1] is gathers[1].inputs[1]
    assert gathers[0].inputs[1].dtype == ir.DataType.INT32


def test_quantized_channel_shuffle_moves_codes_in_onnx_runtime_and_the_reference():
    from eightbit.backends import ReferenceSession

    feeds = {"x": np.random.default_rng(1).normal(size=(16, 1, 3, 6, 6)).astype(np.float32)}
    quantized = eightbit.quantize(_shuffle_net(), {"x": feeds["x"]})
    assert "Gather" in ops(quantized) and "Transpose" not in ops(quantized)
    sample = {"x": feeds["x"][0]}
    reference = ReferenceSession(quantized).run(sample)["y"]
    runtime = run(quantized, sample)[0]
    step = float(np.abs(runtime).max()) / 100
    assert np.abs(reference - runtime).max() <= step


def _gated_net(activation: str):
    """Conv → HardSigmoid (or HardSwish) → Conv, NCHW."""
    rng = np.random.default_rng(2)
    params = [tensor("w1", rng.normal(0, 0.7, (6, 3, 3, 3)).astype(np.float32)),
              tensor("w2", rng.normal(0, 0.5, (4, 6, 1, 1)).astype(np.float32))]
    attributes = {"alpha": 0.2, "beta": 0.5} if activation == "HardSigmoid" else {}
    return make_model(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
         helper.make_node(activation, ["a"], ["g"], **attributes),
         helper.make_node("Conv", ["g", "w2"], ["y"])],
        [value_info("x", [1, 3, 8, 8])], [value_info("y", [1, 4, 8, 8])], params,
    )


def test_hard_gates_become_a_depthwise_convolution_and_a_clip_with_the_same_output():
    from eightbit.passes.hard_gates import HardGatesAsConvolutions

    for activation, expected in (("HardSigmoid", ["Conv", "Conv", "Clip", "Conv"]),
                                 ("HardSwish", ["Conv", "Conv", "Clip", "Mul", "Conv"])):
        proto = onnx.shape_inference.infer_shapes(_gated_net(activation))
        model = check_equivalent(proto, HardGatesAsConvolutions(), x_of((1, 3, 8, 8)), rtol=1e-5, atol=1e-6)
        assert ops(model) == expected


def test_a_hard_sigmoid_gate_runs_as_integer_kernels_in_onnx_runtime():
    from eightbit.backends import ReferenceSession
    from eightbit.backends.onnxruntime import executed_op_types

    data = np.random.default_rng(3).normal(size=(16, 1, 3, 8, 8)).astype(np.float32)
    quantized = eightbit.quantize(_gated_net("HardSigmoid"), {"x": data})
    kernels = executed_op_types(quantized)
    assert "HardSigmoid" not in kernels and kernels.get("QLinearConv") == 3
    assert kernels.get("DequantizeLinear") == 1  # the model's output only: no float island
    # The gate's weights are one value in every channel: one scale, stored once (and its bias's too).
    gate_scales = [node.inputs[1].const_value.numpy() for node in quantized.graph
                   if node.op_type == "DequantizeLinear" and "gate" in node.inputs[0].name]
    assert len(gate_scales) == 2 and all(scale.shape == () for scale in gate_scales)
    sample = {"x": data[0]}
    reference, runtime = ReferenceSession(quantized).run(sample)["y"], run(quantized, sample)[0]
    assert np.abs(reference - runtime).max() <= float(np.abs(runtime).max()) / 100


def _squeeze_excitation_net(gate: str):
    """Conv → GlobalAveragePool → Conv → gate (HardSigmoid or Sigmoid) → Mul by the first conv's output."""
    rng = np.random.default_rng(5)
    params = [tensor("w1", rng.uniform(0, 0.3, (4, 3, 3, 3)).astype(np.float32)),
              tensor("w2", 0.5 * np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1)),
              tensor("b2", np.full(4, -1.0, np.float32))]
    return make_model(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
         helper.make_node("GlobalAveragePool", ["a"], ["p"]),
         helper.make_node("Conv", ["p", "w2", "b2"], ["s"]),
         helper.make_node(gate, ["s"], ["g"]),
         helper.make_node("Mul", ["a", "g"], ["y"])],
        [value_info("x", [1, 3, 8, 8])], [value_info("y", [1, 4, 8, 8])], params,
    )


def test_a_squeeze_excitation_gate_is_quantized_over_its_whole_bound():
    """A gate holds one value per channel per sample: 16 calibration samples are 16 values per channel, and an
    unseen sample passes their largest. Its grid is its whole bound, [0, 1] (eq. 8b), not the calibrated range."""
    from eightbit.backends.onnxruntime import session_with_outputs
    from eightbit.ir import as_model

    data = 0.3 * np.random.default_rng(6).normal(size=(16, 1, 3, 8, 8)).astype(np.float32)
    unseen = {"x": data[0] + 1}  # brighter than every calibration sample
    for gate in ("HardSigmoid", "Sigmoid"):
        float_model = as_model(_squeeze_excitation_net(gate))
        g = next(v for n in float_model.graph for v in n.outputs if v.name == "g")
        session = session_with_outputs(float_model, [g], 1)
        calibrated_high = max(float(session.run({"x": x}, ["g"])["g"].max()) for x in data)
        unseen_high = float(session.run(unseen, ["g"])["g"].max())
        assert calibrated_high < 0.5 < unseen_high  # the calibrated range would clip the unseen gate
        quantized = eightbit.quantize(_squeeze_excitation_net(gate), {"x": data})
        quantize = next(n for n in quantized.graph if n.op_type == "QuantizeLinear" and n.inputs[0].name == "g")
        scale, zero_point = (float(quantize.inputs[i].const_value.numpy()) for i in (1, 2))
        assert zero_point == 0 and scale == pytest.approx(1 / 255)


def test_hard_swish_as_integer_kernels_is_a_measured_choice():
    data = np.random.default_rng(4).normal(size=(16, 1, 3, 8, 8)).astype(np.float32)
    quantized = eightbit.quantize(_gated_net("HardSwish"), {"x": data})
    note = quantized.metadata_props["eightbit.weight_range"]
    assert "1 hard-swishes as gate convolutions" in note
    taken = "integer kernels taken" in note
    assert taken != ("HardSwish" in ops(quantized))


def test_hard_swish_input_grid_is_narrowed_alike_in_both_forms():
    """x enters a gate-form hard-swish only through x * gate(x): below -3 the product is 0 whatever x is, so
    its grid can stop at -3 (eq. 8a), as the float HardSwish op's input grid does."""
    from eightbit import api
    from eightbit.calibrate.memo import RangeMemo
    from eightbit.ir import as_model
    from eightbit.measure.context import Measure
    from eightbit.passes.hard_gates import HardGatesAsConvolutions, swish_product
    from eightbit.pipeline.job import Job
    from eightbit.pipeline.options import QuantizeOptions, WeightRange, resolve
    from eightbit.pipeline.static import build_static

    data = 4 * np.random.default_rng(4).normal(size=(16, 1, 3, 8, 8)).astype(np.float32)
    grids = {}
    for gated in (False, True):
        prepared = prepare(as_model(onnx.shape_inference.infer_shapes(_gated_net("HardSwish"))))
        if gated:
            HardGatesAsConvolutions()(prepared)
            a = next(v for n in prepared.graph for v in n.outputs if v.name == "a")
            assert swish_product(a) is not None and swish_product(a).op_type == "Mul"
        samples = api.load_samples({"x": data}, prepared)
        options = resolve(QuantizeOptions(weight_range="7bit", threads=1, equalization=False), prepared, samples)
        job = Job(prepared, options, samples, Measure(samples, 1), "minmax", RangeMemo(samples))
        model = build_static(job, prepared, WeightRange.SEVEN_BIT).model
        quantize = next(n for n in model.graph if n.op_type == "QuantizeLinear" and n.inputs[0].name == "a")
        scale, zero_point = (float(quantize.inputs[i].const_value.numpy()) for i in (1, 2))
        grids[gated] = (-zero_point * scale, (255 - zero_point) * scale, scale)
    from eightbit.backends.onnxruntime import session_with_outputs
    float_model = as_model(_gated_net("HardSwish"))
    a = next(v for n in float_model.graph for v in n.outputs if v.name == "a")
    session = session_with_outputs(float_model, [a], 1)
    assert min(float(session.run({"x": x}, ["a"])["a"].min()) for x in data) < -10  # the samples reach far below -3 ...
    for low, _, scale in grids.values():
        assert -3 - 2 * scale < low < -3  # ... and both grids stop there (one step of margin, eq. 8a)
    np.testing.assert_allclose(grids[True], grids[False], rtol=1e-6)


def test_an_unclipped_gate_is_not_taken_for_a_hard_swish():
    """x * (x/6 + 1/2) without the clip is not hard-swish: its input grid must not be narrowed."""
    from eightbit.ir import as_model
    from eightbit.passes.hard_gates import swish_product

    def net(clipped: bool):
        inits = [tensor("w", np.full((3, 1, 1, 1), 1 / 6, np.float32)), tensor("b", np.full(3, 0.5, np.float32)),
                 tensor("lo", np.array(0.0, np.float32)), tensor("hi", np.array(1.0, np.float32))]
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["affine"], group=3)]
        if clipped:
            nodes.append(helper.make_node("Clip", ["affine", "lo", "hi"], ["gate"]))
        nodes.append(helper.make_node("Mul", ["x", "gate" if clipped else "affine"], ["y"]))
        model = as_model(make_model(nodes, [value_info("x", [1, 3, 4, 4])], [value_info("y", [1, 3, 4, 4])], inits))
        return next(v for v in model.graph.inputs if v.name == "x")

    assert swish_product(net(clipped=True)) is not None
    assert swish_product(net(clipped=False)) is None


def _upsampling_net():
    """Conv -> Relu -> Resize (nearest, x2) -> Conv, NCHW: a feature pyramid's upsampling between integer convs."""
    rng = np.random.default_rng(3)
    params = [tensor("w1", rng.normal(0, 0.5, (16, 3, 3, 3)).astype(np.float32)),
              tensor("w2", rng.normal(0, 0.3, (8, 16, 1, 1)).astype(np.float32)),
              tensor("scales", np.array([1, 1, 2, 2], np.float32))]
    return make_model(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["r"]),
         helper.make_node("Resize", ["r", "", "scales"], ["u"], mode="nearest",
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
         helper.make_node("Conv", ["u", "w2"], ["y"])],
        [value_info("x", [1, 3, 10, 10])], [value_info("y", [1, 8, 20, 20])], params,
    )


def test_resize_between_walls_computes_the_same():
    from eightbit.passes.resize_channels_first import ResizeChannelsFirst

    proto = onnx.shape_inference.infer_shapes(_upsampling_net())
    model = check_equivalent(proto, ResizeChannelsFirst(), x_of((1, 3, 10, 10)), rtol=0, atol=0)
    assert ops(model) == ["Conv", "Relu", "Reshape", "Resize", "Reshape", "Conv"]
    walls = [node for node in model.graph if node.op_type == "Reshape"]
    assert walls[0].inputs[1] is walls[1].inputs[1]
    assert walls[1].outputs[0].name == "u"  # the tensors keep the original names


def test_quantized_resize_runs_on_codes_channels_first_with_the_same_outputs(monkeypatch):
    from eightbit.backends import ReferenceSession
    from eightbit.backends.onnxruntime import profile_kernels
    from eightbit.pipeline import static as static_module

    calibration = {"x": np.random.default_rng(4).normal(size=(8, 1, 3, 10, 10)).astype(np.float32)}
    sample = {"x": calibration["x"][0]}
    walled = eightbit.quantize(_upsampling_net(), calibration, speed_check=False)
    resizes = [k for k in profile_kernels(walled, sample) if k.op_type == "Resize"]
    assert len(resizes) == 1 and resizes[0].input_types[0] == "uint8"
    assert resizes[0].input_shapes[0] == (1, 16, 10, 10)  # channels-first, on codes
    monkeypatch.setattr(static_module, "ResizeChannelsFirst", lambda: (lambda model: None))
    plain = eightbit.quantize(_upsampling_net(), calibration, speed_check=False)
    assert "Reshape" not in ops(plain)
    np.testing.assert_array_equal(run(walled, sample)[0], run(plain, sample)[0])
    reference = ReferenceSession(walled).run(sample)["y"]
    assert not ReferenceSession(walled).float_nodes
    step = float(np.abs(reference).max()) / 100
    assert np.abs(reference - run(walled, sample)[0]).max() <= step


@pytest.mark.parametrize(("shape", "axes", "keepdims", "pooled"), [
    ([2, 3, 5, 4], [2, 3], 1, True),
    ([2, 3, 5, 4], [-1, -2], 1, True),
    ([2, 3, 5, 4], [2, 3], 0, False),  # the pool keeps the axes
    ([2, 3, 5, 4], [3], 1, False),  # not every spatial axis
    ([2, 5, 4], [2], 1, False),  # rank 3: a layer norm's mean as often as a pool
])
def test_a_mean_over_every_spatial_axis_becomes_a_global_pool(shape, axes, keepdims, pooled):
    from eightbit.passes.mean_as_pool import ReduceMeanAsGlobalPool

    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    out_shape = [d if i not in [a % len(shape) for a in axes] else 1 for i, d in enumerate(shape)] if keepdims \
        else [d for i, d in enumerate(shape) if i not in [a % len(shape) for a in axes]]
    proto = make_model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)],
                       [value_info("x", shape)], [value_info("y", out_shape)],
                       [tensor("axes", np.array(axes, np.int64))], opset=18)
    model = ir.from_proto(proto)
    ReduceMeanAsGlobalPool()(model)
    assert [node.op_type for node in model.graph] == (["GlobalAveragePool"] if pooled else ["ReduceMean"])
    assert model.graph.outputs[0].name == "y"
    expected = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(model_to_bytes(model)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)

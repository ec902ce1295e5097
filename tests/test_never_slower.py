import json

import numpy as np
import pytest

import eightbit
from conftest import small_cnn
from eightbit import api
from eightbit.cli import main
from eightbit.errors import InputError
from eightbit.ir import as_model, load_model
from eightbit.never_slower import SlowerNode, SpeedCheck, node_times, run_as_integer
from eightbit.pipeline.steps import speed
from eightbit.prepare import prepare


def _calibration(count=16):
    return {"x": np.random.default_rng(1).normal(0, 1, (count, 3, 16, 16)).astype(np.float32)}


def test_every_convolution_kernel_is_traced_to_its_node_in_float_and_in_int8():
    """Float convolutions run channels-blocked (kernels named after the activation they absorbed),
    int8 ones channels-last (named after the node with suffixes): both come back to the node."""
    reference = as_model(small_cnn(channels=16))
    prepare(reference)
    quantized = eightbit.quantize(small_cnn(channels=16), _calibration(), speed_check=False)
    feed = {"x": _calibration(1)["x"]}
    for model in (reference, quantized):
        times = node_times(model, feed, threads=1, runs=3)
        assert {"conv1", "conv2", "fc"} <= set(times)
        assert all(us > 0 for us in times.values())


def test_the_check_is_recorded_in_the_model_and_read_back():
    model = eightbit.quantize(small_cnn(), _calibration(), speed_check=True)
    check = api.speed_check_of(model)
    assert check is not None
    assert SpeedCheck.from_dict(json.loads(json.dumps(check.as_dict()))) == check
    assert check.summary().startswith("speed check: ")
    assert api.speed_check_of(eightbit.quantize(small_cnn(), _calibration(), speed_check=False)) is None
    # timed, so off by default (the model must not depend on the machine's load) and on at --effort max
    assert api.speed_check_of(eightbit.quantize(small_cnn(), _calibration())) is None
    assert api.speed_check_of(eightbit.quantize(small_cnn(), _calibration(), effort="max")) is not None


def test_a_slower_node_stays_float_only_where_the_whole_model_then_runs_faster(monkeypatch):
    """Which nodes are slower is the profile's to say; given one, the rebuild and the timed decision are real.
    The Gemm gives the model's float output (eq. 7c), so float it reads a grid and writes none."""
    slower = [SlowerNode("fc", "Gemm", 500.0, 100.0), SlowerNode("maxpool", "MaxPool", 300.0, 50.0)]
    monkeypatch.setattr(speed, "slower_in_int8", lambda *args, **kwargs: list(slower))
    model = eightbit.quantize(small_cnn(), _calibration(), speed_check=True)
    check = api.speed_check_of(model)
    assert [node.name for node in check.candidates] == ["fc"]  # MaxPool moves codes: never a candidate
    assert check.fused_anyway == ()
    assert check.int8_ms > 0 and check.with_float_ms > 0
    assert check.taken == (check.with_float_ms <= check.int8_ms * 0.97 and check.int8_ms - check.with_float_ms >= 0.05)
    float_nodes = {node.name: node.reason for node in api.float_nodes_of(model)}
    assert ("fc" in float_nodes) == check.taken
    assert "maxpool" not in float_nodes
    if check.taken:
        assert float_nodes["fc"].startswith("slower in int8 here: 500 us against 100 us")
    assert "move codes" in check.summary()


def test_a_model_rebuilt_with_float_nodes_says_how_its_weight_range_was_chosen(monkeypatch):
    """The rebuild is handed the weight range already chosen; its note is the first build's, not "as asked"."""
    from eightbit.measure.latency import LatencyPair

    monkeypatch.setattr(speed, "slower_in_int8", lambda *args, **kwargs: [SlowerNode("fc", "Gemm", 500.0, 100.0)])
    monkeypatch.setattr(speed, "latency_side_by_side", lambda *args, **kwargs: LatencyPair(2.0, 1.0))
    model = eightbit.quantize(small_cnn(), _calibration(), speed_check=True)
    assert api.speed_check_of(model).taken and "fc" in {node.name for node in api.float_nodes_of(model)}
    unchecked = eightbit.quantize(small_cnn(), _calibration(), speed_check=False)
    def weight_range(quantized):  # the note's first clauses; weight codes and biases follow
        return quantized.metadata_props["eightbit.weight_range"].split("; weight codes")[0]

    assert weight_range(model) == weight_range(unchecked) and "as asked" not in weight_range(model)


def test_a_node_the_runtime_fuses_between_two_grids_is_not_kept_float(monkeypatch):
    """conv2 reads a grid the residual Add reads too and writes one the Add needs: left float, ONNX Runtime
    quantizes its weights itself and runs it as QLinearConv, so it stays integer with the plan's own weights."""
    monkeypatch.setattr(speed, "slower_in_int8", lambda *args, **kwargs: [SlowerNode("conv2", "Conv", 500.0, 100.0)])
    model = eightbit.quantize(small_cnn(), _calibration(), speed_check=True)
    check = api.speed_check_of(model)
    assert check.fused_anyway == ("conv2",)
    assert check.candidates == [] and not check.taken and check.int8_ms is None
    assert "conv2" not in {node.name for node in api.float_nodes_of(model)}
    assert "as integer kernels even when left float between two grids (conv2): kept integer" in check.summary()
    assert SpeedCheck.from_dict(json.loads(json.dumps(check.as_dict()))) == check


def test_run_as_integer_names_the_float_nodes_the_runtime_fuses():
    quantized = eightbit.quantize(small_cnn(), _calibration(), speed_check=False)
    names = [node.name for node in quantized.graph if node.op_type in ("Conv", "Gemm")]
    assert set(names) >= {"conv1", "conv2", "fc"}
    feed = {"x": _calibration(1)["x"]}
    assert set(run_as_integer(quantized, names, feed, threads=1)) == {"conv1", "conv2", "fc"}
    reference = as_model(small_cnn())
    prepare(reference)
    assert run_as_integer(reference, names, feed, threads=1) == []


def test_cli_reports_the_check_and_can_skip_it(cnn_path, cnn_data, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(cnn_path), "-o", str(out), "--calibration", str(cnn_data), "-q", "--json"]) == 0
    assert "speed_check" not in json.loads(capsys.readouterr().out)  # timed: asked for, or --effort max
    assert main(["quantize", str(cnn_path), "-o", str(out), "--calibration", str(cnn_data), "-q", "--speed-check",
                 "--json"]) == 0
    assert "speed_check" in json.loads(capsys.readouterr().out)
    assert main(["quantize", str(cnn_path), "-o", str(out), "--calibration", str(cnn_data), "-q", "--effort", "max",
                 "--json"]) == 0
    assert "speed_check" in json.loads(capsys.readouterr().out)
    assert main(["quantize", str(cnn_path), "-o", str(out), "--calibration", str(cnn_data), "-q",
                 "--effort", "max", "--no-speed-check", "--json"]) == 0
    assert "speed_check" not in json.loads(capsys.readouterr().out)
    assert api.speed_check_of(load_model(out)) is None


def test_openvino_layers_are_traced_to_groups_of_nodes():
    """OpenVINO fuses a convolution with its activation (float) or its conversions (int8) into one layer."""
    from eightbit.never_slower import openvino_slower

    reference = as_model(small_cnn(channels=16))
    prepare(reference)
    quantized = eightbit.quantize(small_cnn(channels=16), _calibration(), speed_check=False)
    groups = openvino_slower(quantized, reference, {"x": _calibration(1)["x"]}, threads=1, runs=3)
    members = [name for names, _, _ in groups for name in names]
    assert len(members) == len(set(members))  # each node in one group
    timed = {name: (int8_us, float_us) for names, int8_us, float_us in groups for name in names}
    for name in ("conv1", "conv2", "fc"):
        assert timed[name][0] > 0 and timed[name][1] > 0
    assert not any(node.op_type in ("QuantizeLinear", "DequantizeLinear")
                   for node in quantized.graph if node.name in timed)


def test_openvino_target_keeps_the_plain_forms_and_checks_speed_in_openvino():
    from test_passes import _gated_net, _upsampling_net

    for net, x_shape, ort_form in ((_upsampling_net(), (8, 1, 3, 10, 10), "Reshape"),
                                   (_gated_net("HardSigmoid"), (8, 1, 3, 8, 8), "HardSigmoid")):
        calibration = {"x": np.random.default_rng(5).normal(size=x_shape).astype(np.float32)}
        for_openvino = eightbit.quantize(net, calibration, target="openvino", speed_check=True)
        for_ort = eightbit.quantize(net, calibration, speed_check=False)
        openvino_kinds = [node.op_type for node in for_openvino.graph]
        ort_kinds = [node.op_type for node in for_ort.graph]
        if ort_form == "Reshape":  # ONNX Runtime's walls around the Resize
            assert "Reshape" in ort_kinds and "Reshape" not in openvino_kinds
        else:  # ONNX Runtime's gate convolution in place of the op
            assert "HardSigmoid" not in ort_kinds and "HardSigmoid" in openvino_kinds
        assert for_openvino.metadata_props["eightbit.target"] == "openvino"
        assert for_ort.metadata_props["eightbit.target"] == "ort"
        check = api.speed_check_of(for_openvino)
        assert check.target == "openvino" and "OpenVINO" in check.summary()


def test_openvino_runs_the_model_made_for_it(tmp_path):
    from eightbit.backends import OrtSession
    from eightbit.backends.openvino import OpenVinoSession
    from test_passes import _upsampling_net

    calibration = {"x": np.random.default_rng(5).normal(size=(8, 1, 3, 10, 10)).astype(np.float32)}
    path = tmp_path / "q.onnx"
    eightbit.quantize(_upsampling_net(), calibration, target="openvino", output=path)
    sample = {"x": calibration["x"][0]}
    got = OpenVinoSession(path).run(sample)["y"]
    expected = OrtSession(as_model(_upsampling_net())).run(sample)["y"]
    noise = float(np.mean((got - expected) ** 2))
    assert 10 * np.log10(float(np.mean(expected ** 2)) / noise) > 25


def test_an_unknown_target_is_refused(cnn_path, cnn_data, tmp_path):
    out = tmp_path / "q.onnx"
    with pytest.raises(SystemExit) as exit:
        main(["quantize", str(cnn_path), "-o", str(out), "--calibration", str(cnn_data), "--target", "tflite"])
    assert exit.value.code == 2
    assert not out.exists()
    with pytest.raises(InputError, match="unknown target 'tflite'"):
        eightbit.quantize(small_cnn(), _calibration(), target="tflite")

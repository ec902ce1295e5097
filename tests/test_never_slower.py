import json

import numpy as np

import eightbit
from conftest import small_cnn
from eightbit import api
from eightbit.cli import main
from eightbit.ir import as_model, load_model
from eightbit.never_slower import SlowerNode, SpeedCheck, node_times
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
    model = eightbit.quantize(small_cnn(), _calibration())
    check = api.speed_check_of(model)
    assert check is not None
    assert SpeedCheck.from_dict(json.loads(json.dumps(check.as_dict()))) == check
    assert check.summary().startswith("speed check: ")
    assert api.speed_check_of(eightbit.quantize(small_cnn(), _calibration(), speed_check=False)) is None


def test_a_slower_node_stays_float_only_where_the_whole_model_then_runs_faster(monkeypatch):
    """Which nodes are slower is the profile's to say; given one, the rebuild and the timed decision are real."""
    slower = [SlowerNode("conv2", "Conv", 500.0, 100.0), SlowerNode("maxpool", "MaxPool", 300.0, 50.0)]
    monkeypatch.setattr(api, "slower_in_int8", lambda *args, **kwargs: list(slower))
    model = eightbit.quantize(small_cnn(), _calibration())
    check = api.speed_check_of(model)
    assert [node.name for node in check.candidates] == ["conv2"]  # MaxPool moves codes: never a candidate
    assert check.int8_ms > 0 and check.with_float_ms > 0
    assert check.taken == (check.with_float_ms <= check.int8_ms * 0.97)
    float_nodes = {node.name: node.reason for node in api.float_nodes_of(model)}
    assert ("conv2" in float_nodes) == check.taken
    assert "maxpool" not in float_nodes
    if check.taken:
        assert float_nodes["conv2"].startswith("slower in int8 here: 500 us against 100 us")
    assert "move codes" in check.summary()


def test_cli_reports_the_check_and_can_skip_it(cnn_path, cnn_data, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(cnn_path), "-o", str(out), "--calibration", str(cnn_data), "-q", "--json"]) == 0
    assert "speed_check" in json.loads(capsys.readouterr().out)
    assert main(["quantize", str(cnn_path), "-o", str(out), "--calibration", str(cnn_data), "-q",
                 "--no-speed-check", "--json"]) == 0
    assert "speed_check" not in json.loads(capsys.readouterr().out)
    assert api.speed_check_of(load_model(out)) is None

"""`eightbit bench` and `eightbit explain`: every runtime side by side, and where the time goes."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import eightbit
from conftest import make_model, tensor, value_info
from eightbit.api import load_samples
from eightbit.backends.openvino import openvino_available
from eightbit.cli import main
from eightbit.errors import InputError
from eightbit.ir import as_model, load_model
from eightbit.isa import cpu_features
from eightbit.report.bench import BASELINE, OPENVINO_TARGET, bench
from eightbit.report.compare import compare_models
from eightbit.report.explain import explain
from test_cli import assert_refused, run_cli

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed (pip install openvino)")


@pytest.fixture
def quantized(cnn_path, cnn_data, tmp_path):
    path = tmp_path / "cnn.int8.onnx"
    eightbit.quantize(cnn_path, cnn_data, output=path)
    return path


def test_bench_puts_every_runtime_beside_the_float_baseline(cnn_path, cnn_data, quantized):
    samples = load_samples(cnn_data, load_model(cnn_path))
    result = bench(cnn_path, quantized, samples, samples, rounds=3, openvino=openvino_available())
    rows = {row.label: row for row in result.rows}
    assert rows[BASELINE].speedup == 1.0 and rows[BASELINE].agreement.sqnr_db == float("inf")
    ours = rows["eightbit int8, ONNX Runtime"]
    # The agreement is the one `eightbit compare` reports on the same samples.
    expected = compare_models(cnn_path, quantized, samples, time_it=False).outputs["probs"]
    assert ours.agreement.sqnr_db == pytest.approx(expected.sqnr_db)
    assert ours.size_bytes == quantized.stat().st_size
    assert "ORT quantize_static int8, ONNX Runtime" in rows
    # NNCF, the dev extra's: its quantization of the ONNX model in ONNX Runtime, and of OpenVINO's conversion in
    # OpenVINO, each with its quantize time.
    assert rows["NNCF int8, ONNX Runtime"].agreement.sqnr_db > 20
    if openvino_available():
        assert rows["NNCF int8, OpenVINO"].agreement.sqnr_db > 20
        assert rows["NNCF int8, OpenVINO"].path.suffix == ".xml"
    assert any(note.startswith("NNCF int8, ONNX Runtime: quantized in") for note in result.notes)
    for row in result.rows:
        if row.milliseconds is not None:
            assert row.milliseconds > 0 and row.speedup == pytest.approx(rows[BASELINE].milliseconds / row.milliseconds)
            assert row.memory is not None and row.memory.peak_mib >= row.memory.resident_mib >= 0


def test_bench_says_when_nncf_is_not_there(cnn_path, cnn_data, quantized, monkeypatch):
    monkeypatch.setattr("eightbit.report.bench.nncf_available", lambda: False)
    samples = load_samples(cnn_data, load_model(cnn_path))
    result = bench(cnn_path, quantized, samples, samples, openvino=False, memory=False, rounds=1)
    assert not [row for row in result.rows if row.label.startswith("NNCF")]
    assert "NNCF rows left out: NNCF is not installed (pip install nncf)" in result.notes


@needs_openvino
def test_bench_runs_both_models_in_openvino_and_says_when_bf16_is_not_there(cnn_path, cnn_data, quantized):
    samples = load_samples(cnn_data, load_model(cnn_path))
    result = bench(cnn_path, quantized, samples, peer=False, memory=False, rounds=2)
    rows = {row.label: row for row in result.rows}
    assert rows["float, OpenVINO f32"].agreement.sqnr_db > 60  # the same float function, another runtime
    assert rows["eightbit int8, OpenVINO"].agreement.sqnr_db > 20
    bf16 = rows["float, OpenVINO bf16"]
    if {"avx512_bf16", "amx_bf16"} & cpu_features().flags:
        assert bf16.milliseconds is not None
    else:
        assert bf16.milliseconds is None and "has no bf16" in bf16.note


@needs_openvino
def test_bench_command_makes_and_runs_a_model_for_openvino_too(cnn_path, cnn_data, capsys):
    assert main(["bench", str(cnn_path), "--calibration", str(cnn_data), "--rounds", "2", "--no-memory",
                 "--no-peer", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["label"]: row for row in result["rows"]}
    assert rows[OPENVINO_TARGET]["runtime"] == "openvino" and rows[OPENVINO_TARGET]["sqnr_db"] > 20
    advice = [note for note in result["notes"] if note.startswith("recommended here:")]
    assert len(advice) == 1 and ("--target openvino -o" in advice[0]) == ("made with --target openvino" in advice[0])


def test_bench_command_writes_its_table_as_markdown(cnn_path, cnn_data, tmp_path, capsys):
    report = tmp_path / "bench.md"
    assert main(["bench", str(cnn_path), "--calibration", str(cnn_data), "--rounds", "2", "--no-memory",
                 "--no-openvino", "--markdown", str(report), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [row["label"] for row in rows][:2] == [BASELINE, "eightbit int8, ONNX Runtime"]
    text = report.read_text()
    assert "| runs as |" in text and "eightbit bench" in text and cpu_features().summary() in text


def test_bench_times_a_batch_of_samples(cnn_path, cnn_data, capsys):
    assert main(["bench", str(cnn_path), "--calibration", str(cnn_data), "--rounds", "1", "--no-memory",
                 "--no-peer", "--no-openvino", "--batch", "40", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["batch"] == 40 and all(row["milliseconds"] > 0 for row in result["rows"])


def test_a_batch_feed_repeats_the_samples_and_a_fixed_batch_is_refused(cnn_path, cnn_data):
    samples = load_samples(cnn_data, load_model(cnn_path))
    feed = samples.feed_of(samples.count + 3)["x"]
    assert feed.shape[0] == samples.count + 3
    np.testing.assert_array_equal(feed[samples.count:], feed[:3])
    one_by_one = np.random.default_rng(1).normal(size=(3, 1, 3, 16, 16)).astype(np.float32)  # rows with a batch axis
    per_sample = load_samples({"x": one_by_one}, load_model(cnn_path))
    assert per_sample.per_sample and per_sample.feed_of(5)["x"].shape == (5, 3, 16, 16)
    fixed = make_model([helper.make_node("Relu", ["x"], ["y"])], [value_info("x", [2, 3])], [value_info("y", [2, 3])])
    with pytest.raises(InputError, match="fixed batch of 2"):
        load_samples({"x": np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)}, as_model(fixed)).feed_of(8)


def test_bench_refuses_what_it_cannot_measure(cnn_path, cnn_data, tmp_path):
    assert_refused(run_cli("bench", cnn_path), "--calibration")
    assert_refused(run_cli("bench", cnn_path, "--calibration", cnn_data, "--batch", "0"), "--batch")
    before = cnn_path.read_bytes()
    assert_refused(run_cli("bench", cnn_path, "--calibration", cnn_data, "--markdown", cnn_path), "overwrite")
    assert cnn_path.read_bytes() == before


def test_explain_finds_the_float_round_trips_onnx_runtime_keeps(tmp_path):
    """ConvTranspose has no integer kernel in ONNX Runtime's CPU provider: its Q/DQ stay, and explain says so."""
    rng = np.random.default_rng(0)
    params = [tensor("w1", rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)),
              tensor("w2", rng.normal(0, 0.5, (8, 4, 2, 2)).astype(np.float32)),
              tensor("w3", rng.normal(0, 0.5, (8, 4, 1, 1)).astype(np.float32))]
    model = make_model(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
         helper.make_node("ConvTranspose", ["a", "w2"], ["u"], strides=[2, 2]),
         helper.make_node("Conv", ["u", "w3"], ["y"])],
        [value_info("x", [1, 3, 12, 12])], [value_info("y", [1, 8, 24, 24])], params,
    )
    float_path, int8_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(model, float_path)
    eightbit.quantize(float_path, {"x": rng.normal(size=(8, 1, 3, 12, 12)).astype(np.float32)}, output=int8_path)
    result = explain(int8_path, float_path, runs=3)
    trips = {trip.around: trip.kernels for trip in result.round_trips}
    assert trips.get("ConvTranspose", 0) >= 2  # dequantized input and weights, quantized output
    count, _ = result.by_kind["integer kernels"]
    assert count == 2  # both convolutions
    assert result.made_by_eightbit and result.float_nodes == []
    assert result.float_ms > 0 and result.int8_ms > 0
    assert any("ConvTranspose" in line for line in result.verdict())


def test_explain_names_listed_float_nodes_that_run_as_integer_kernels(tmp_path, monkeypatch):
    """A model made before the speed check knew of ONNX Runtime's fusion lists conv2 (between two grids) as
    float; the runtime quantizes its weights itself and runs it as QLinearConv, and explain says so."""
    from conftest import small_cnn
    from eightbit.measure.latency import LatencyPair
    from eightbit.never_slower import SlowerNode
    from eightbit.pipeline.steps import speed

    monkeypatch.setattr(speed, "slower_in_int8", lambda *args, **kwargs: [SlowerNode("conv2", "Conv", 500.0, 100.0)])
    monkeypatch.setattr(speed, "run_as_integer", lambda *args, **kwargs: [])  # as that speed check did
    monkeypatch.setattr(speed, "latency_side_by_side", lambda *args, **kwargs: LatencyPair(2.0, 1.0))
    data = np.random.default_rng(1).normal(0, 1, (16, 3, 16, 16)).astype(np.float32)
    int8_path = tmp_path / "q.onnx"
    eightbit.quantize(small_cnn(), {"x": data}, output=int8_path, speed_check=True)
    monkeypatch.undo()
    result = explain(int8_path, runs=2)
    assert "conv2" in {node.name for node in result.float_nodes}
    assert result.integer_anyway == ["conv2"]
    assert any(line.startswith("1 of the nodes the model lists as float run as integer kernels: conv2")
               for line in result.verdict())
    assert result.as_dict()["integer_anyway"] == ["conv2"]


def test_explain_profiles_each_model_once(cnn_path, quantized, monkeypatch):
    from eightbit import never_slower
    from eightbit.backends import onnxruntime
    from eightbit.report import explain as explain_module

    profiled = []

    def counted(model, *args, **kwargs):
        profiled.append(str(model))
        return onnxruntime.profile_kernels(model, *args, **kwargs)

    for module in (explain_module, never_slower):
        monkeypatch.setattr(module, "profile_kernels", counted)
    result = explain(quantized, cnn_path, runs=2)
    assert sorted(profiled) == sorted([str(quantized), str(cnn_path)])
    assert result.float_kernel_microseconds > 0 and isinstance(result.slower, list)


def test_explain_command_shows_the_cpu_and_the_reasons(cnn_path, quantized, capsys):
    assert main(["explain", str(quantized), "--float", str(cnn_path), "--runs", "2"]) == 0
    text = capsys.readouterr().out
    assert cpu_features().summary() in text and "why:" in text and "nodes left in float: 1" in text


def test_explain_asks_for_a_sample_when_a_size_is_free(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [value_info("x", [1, 3, "height", "width"])],
                       [value_info("y", [1, 3, "height", "width"])])
    path = tmp_path / "free.onnx"
    onnx.save(model, path)
    assert_refused(run_cli("explain", path), "--data", "'x'")


def _row(label: str, ms: float, db: float):
    from eightbit.measure.metrics import Agreement
    from eightbit.report.bench import BenchRow

    row = BenchRow(label, "ort", Path(label), milliseconds=ms, speedup=10.0 / ms, agreement=Agreement())
    row.agreement.add(np.ones(100, np.float32), np.ones(100, np.float32) + np.float32(10 ** (-db / 20)))
    return row


def test_the_recommendation_is_the_fastest_row_that_agrees():
    from eightbit.report.bench import Bench, recommendation

    rows = [_row(BASELINE, 10.0, 200), _row("eightbit int8, ONNX Runtime", 4.0, 30),
            _row("eightbit int8, OpenVINO", 3.0, 22), _row("ORT quantize_static int8, ONNX Runtime", 2.0, 40),
            _row("float, OpenVINO f32", 8.0, 120)]
    result = Bench(Path("m.onnx"), rows, "cpu", 2, 16, "y", [])
    # The OpenVINO int8 row is faster but below 25 dB; the peer's is not eightbit's to recommend.
    assert recommendation(result, 25.0).startswith("recommended here: eightbit's int8 model, in ONNX Runtime")
    assert "in OpenVINO" in recommendation(result, 20.0)
    assert recommendation(result, 35.0).startswith("recommended here: keep the float model, in OpenVINO")
    result.rows.append(_row(OPENVINO_TARGET, 2.5, 28))
    assert recommendation(result, 25.0).startswith("recommended here: eightbit's int8 model made with --target "
                                                   "openvino, in OpenVINO (2.50 ms")

"""The command line: contracts, and every kind of bad input (exit 2, one line, nothing written)."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

from conftest import make_model, value_info
from eightbit.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "eightbit.cli", *map(str, args)], capture_output=True, text=True)


def assert_refused(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eightbit: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out.onnx"


def unchanged(path, before):
    return path.read_bytes() == before


def test_quantize_json_report(cnn_path, cnn_data, out, capsys):
    assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.exists()
    assert report["outputs"]["probs"]["sqnr_db"] > 20
    assert report["outputs"]["probs"]["top1_agreement"] >= 0.9
    assert report["latency_ms"]["float"] > 0 and report["latency_ms"]["quantized"] > 0
    assert [n["op_type"] for n in report["float_nodes"]] == ["Softmax"]
    assert report["size_bytes"] == {"float": cnn_path.stat().st_size, "quantized": out.stat().st_size,
                                    "ratio": round(out.stat().st_size / cnn_path.stat().st_size, 4)}


def test_quantize_table_report(cnn_path, cnn_data, out):
    result = run_cli("quantize", cnn_path, "--calibration", cnn_data, "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    for fragment in ("SQNR", "speed-up", "file size", "nodes left in float: 1", "Softmax"):
        assert fragment in result.stdout


def test_quantize_says_when_the_int8_model_ran_slower(cnn_path, cnn_data, out, capsys, monkeypatch):
    from eightbit.measure.latency import LatencyPair
    from eightbit.report import compare

    measured, timings = compare.compare_models, {}

    def timed(*args, **kwargs):  # float and int8 medians as a CPU without fast int8 kernels may give them
        comparison = measured(*args, **kwargs)
        comparison.latency = timings["pair"]
        return comparison

    monkeypatch.setattr(compare, "compare_models", timed)
    for pair, said in ((LatencyPair(2.0, 2.5), True), (LatencyPair(2.0, 1.0), False)):
        timings["pair"] = pair
        assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "-q"]) == 0
        text = capsys.readouterr().out
        assert ("slower than float here: 2.500 ms against 2.000 ms" in text) is said
        assert ("eightbit explain" in text) is said
        assert (f"`eightbit bench {cnn_path} --calibration {cnn_data}`" in text) is said
        assert "--min-sqnr off" not in text  # every node the budget measured is integer: nothing to let go
    # A budget out of reach keeps the first grids float: the all-integer model is the one to try for speed.
    timings["pair"] = LatencyPair(2.0, 2.5)
    assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "-q",
                 "--min-sqnr", "60"]) == 0
    assert "`--min-sqnr off` writes the all-integer model" in capsys.readouterr().out


def test_run_and_compare(cnn_path, cnn_data, out, tmp_path, capsys):
    assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "-q", "--no-report"]) == 0
    outputs = tmp_path / "y.npz"
    assert main(["run", str(out), "--data", str(cnn_data), "-o", str(outputs)]) == 0
    with np.load(outputs) as y:
        assert y["probs"].shape == (24, 10)
    capsys.readouterr()
    assert main(["compare", str(cnn_path), str(out), "--data", str(cnn_data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 24 and report["outputs"]["probs"]["sqnr_db"] > 20


def test_run_and_compare_on_the_reference_backend(cnn_path, cnn_data, out, tmp_path, capsys):
    assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "-q", "--no-report",
                 "--weight-range", "7bit"]) == 0
    by_ort, by_reference = tmp_path / "ort.npz", tmp_path / "reference.npz"
    assert main(["run", str(out), "--data", str(cnn_data), "-o", str(by_ort)]) == 0
    assert main(["run", str(out), "--data", str(cnn_data), "-o", str(by_reference), "--backend", "reference"]) == 0
    with np.load(by_ort) as a, np.load(by_reference) as b:
        assert b["probs"].shape == (24, 10)
        assert np.mean(a["probs"].argmax(-1) == b["probs"].argmax(-1)) >= 0.95
    capsys.readouterr()
    assert main(["compare", str(cnn_path), str(out), "--data", str(cnn_data), "--json", "--backend", "reference"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"]["probs"]["sqnr_db"] > 20 and "latency_ms" not in report


def test_unknown_backend_is_refused(out, cnn_data):
    result = run_cli("run", out, "--data", cnn_data, "-o", out.with_suffix(".npz"), "--backend", "gpu")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_not_an_onnx_file(tmp_path, cnn_data, out):
    bogus = tmp_path / "notes.onnx"
    bogus.write_text("this is not a model")
    assert_refused(run_cli("quantize", bogus, "--calibration", cnn_data, "-o", out), "notes.onnx")
    assert not out.exists() and bogus.read_text() == "this is not a model"


def test_truncated_file(tmp_path, cnn_path, cnn_data, out):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(cnn_path.read_bytes()[: cnn_path.stat().st_size // 2])
    before = truncated.read_bytes()
    assert_refused(run_cli("quantize", truncated, "--calibration", cnn_data, "-o", out), "truncated.onnx")
    assert not out.exists() and unchanged(truncated, before)


def test_auto_calibration_without_samples(cnn_path, out):
    assert_refused(run_cli("quantize", cnn_path, "--calibrate", "auto", "-o", out), "--calibrate auto", "--calibration")
    assert not out.exists()


def test_missing_model_file(tmp_path, cnn_data, out):
    assert_refused(run_cli("quantize", tmp_path / "nope.onnx", "--calibration", cnn_data, "-o", out), "no such file")


def test_a_folder_given_as_the_model_is_named_a_folder(tmp_path, cnn_data, out):
    assert_refused(run_cli("quantize", tmp_path, "--calibration", cnn_data, "-o", out), "is a folder")
    assert not out.exists()


def test_calibrate_under_a_scheme_that_calibrates_nothing_is_refused(cnn_path, cnn_data, out):
    assert_refused(run_cli("quantize", cnn_path, "--calibration", cnn_data, "--scheme", "weights", "--calibrate",
                           "entropy", "-o", out), "--calibrate entropy", "weights scheme")
    assert not out.exists()


def test_ids_outside_the_table_a_gather_reads_are_named(tmp_path, out):
    """An embedding lookup fed ids past its table: ONNX Runtime's reason in one line, nothing written."""
    table = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    weight = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"]), helper.make_node("MatMul", ["rows", "w"], ["y"])]
    model = make_model(nodes, [value_info("ids", [2], onnx.TensorProto.INT64)], [value_info("y", [2, 3])],
                       [onnx.numpy_helper.from_array(table, "table"), onnx.numpy_helper.from_array(weight, "w")])
    path, data = tmp_path / "lookup.onnx", tmp_path / "ids.npz"
    onnx.save(model, path)
    np.savez(data, ids=np.array([[1, 2], [3, 100]], np.int64))
    before = data.read_bytes()
    assert_refused(run_cli("quantize", path, "--calibration", data, "-o", out), "ONNX Runtime could not run",
                   "indices", "check the data")
    assert not out.exists() and unchanged(data, before)


def test_export_int_refuses_a_float_model(cnn_path, tmp_path):
    target = tmp_path / "program.json"
    assert_refused(run_cli("export-int", cnn_path, "-o", target), "no integer steps", "quantize it first")
    assert not target.exists()


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"image": np.zeros((4, 3, 16, 16), np.float32)}, "unknown input name"),
        ({"x": np.zeros((4, 3, 8, 8), np.float32)}, "shape"),
        ({"x": np.zeros((0, 3, 16, 16), np.float32)}, "empty"),
    ],
)
def test_bad_calibration_data(tmp_path, cnn_path, out, arrays, fragment):
    data = tmp_path / "bad.npz"
    np.savez(data, **arrays)
    before = cnn_path.read_bytes()
    assert_refused(run_cli("quantize", cnn_path, "--calibration", data, "-o", out), fragment)
    assert not out.exists() and unchanged(cnn_path, before)


def test_nan_in_calibration_names_input_and_sample(tmp_path, cnn_path, out):
    x = np.zeros((5, 3, 16, 16), np.float32)
    x[3, 0, 0, 0] = np.nan
    data = tmp_path / "nan.npz"
    np.savez(data, x=x)
    assert_refused(run_cli("quantize", cnn_path, "--calibration", data, "-o", out), "'x'", "sample 3", "NaN")
    assert not out.exists()


def test_calibration_file_that_is_not_npz(tmp_path, cnn_path, out):
    data = tmp_path / "data.npz"
    data.write_text("a,b,c")
    assert_refused(run_cli("quantize", cnn_path, "--calibration", data, "-o", out), "npz")


def test_output_equal_to_input_is_refused(cnn_path, cnn_data):
    before = cnn_path.read_bytes()
    assert_refused(run_cli("quantize", cnn_path, "--calibration", cnn_data, "-o", cnn_path), "overwrite")
    assert unchanged(cnn_path, before)


def test_unwritable_output_folder(tmp_path, cnn_path, cnn_data):
    target = tmp_path / "missing" / "out.onnx"
    assert_refused(run_cli("quantize", cnn_path, "--calibration", cnn_data, "-o", target), "output folder")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_refused(run_cli("quantize", cnn_path, "--calibration", cnn_data, "-o", blocker / "out.onnx"),
                   "output folder")


def test_static_without_calibration_is_refused(cnn_path, out):
    assert_refused(run_cli("quantize", cnn_path, "-o", out), "--calibration")
    assert not out.exists()


def test_op_without_int8_kernel_stays_float_and_is_listed(tmp_path, out, capsys):
    model = make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Erf", ["r"], ["e"]),
         helper.make_node("Add", ["e", "x"], ["y"])],
        [value_info("x", ["n", 8])], [value_info("y", ["n", 8])],
    )
    source, data = tmp_path / "erf.onnx", tmp_path / "d.npz"
    onnx.save(model, source)
    np.savez(data, x=np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32))
    assert main(["quantize", str(source), "--calibration", str(data), "-o", str(out), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(n["op_type"], n["reason"]) for n in report["float_nodes"]] == [("Erf", "no int8 kernel for Erf")]
    assert report["outputs"]["y"]["sqnr_db"] > 30


def test_image_folder_calibration(tmp_path, cnn_path, out):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    result = run_cli("quantize", cnn_path, "--calibration", folder, "--size", 16, 16, "--mean", 0.5,
                     "--std", 0.25, "-o", out, "-q", "--no-report")
    assert result.returncode == 0, result.stderr
    assert out.exists()
    assert_refused(run_cli("quantize", cnn_path, "--calibration", folder, "-o", tmp_path / "o2.onnx"), "--size")


def test_an_image_too_large_to_decode_safely_is_named(tmp_path, cnn_path, out):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("1", (20000, 20000)).save(folder / "huge.png")  # 400 M pixels in a small file
    assert_refused(run_cli("quantize", cnn_path, "--calibration", folder, "--size", 16, 16, "-o", out),
                   "huge.png", "too many pixels")
    assert not out.exists()


def test_constant_calibration_samples_are_warned_about_in_one_line(tmp_path, cnn_path, out):
    data = tmp_path / "zeros.npz"
    np.savez(data, x=np.zeros((4, 3, 16, 16), np.float32))
    result = run_cli("quantize", cnn_path, "--calibration", data, "-o", out, "-q", "--no-report")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"eightbit: warning: {data}: input 'x' is 0 in every sample: ranges calibrated on it say nothing of real "
        "data; give real samples"]


def test_demo_runs():
    result = run_cli("demo", "-q")
    assert result.returncode == 0, result.stderr
    assert "top-1 accuracy" in result.stdout and "int8" in result.stdout


def test_dimension_written_as_minus_one_is_dynamic(tmp_path, out):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [value_info("x", [-1, 3])], [value_info("y", [-1, 3])])
    source, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(model, source)
    np.savez(data, x=np.random.default_rng(0).normal(size=(5, 1, 3)).astype(np.float32))
    assert main(["quantize", str(source), "--calibration", str(data), "-o", str(out), "-q", "--no-report"]) == 0


def test_the_report_gives_one_line_a_decision_and_the_time_of_each_stage(cnn_path, cnn_data, out, capsys):
    from eightbit.ir import load_model
    from eightbit.record import decisions_of

    assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "-q"]) == 0
    short = capsys.readouterr().out
    decisions = decisions_of(load_model(out))
    assert [d["step"] for d in decisions][:2] == ["weight range", "weight codes"]
    assert all(f"{d['step']}: {d['taken']}" in short for d in decisions)
    assert "time: load and prepare" in short and "quantize" in short.split("time:")[1]
    assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "-q", "--verbose"]) == 0
    assert load_model(out).metadata_props["eightbit.weight_range"] in capsys.readouterr().out
    assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "-q", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["decisions"] == decisions and report["seconds"]["steps"] > 0


def test_threads_out_of_bounds_are_refused_by_every_command(cnn_path, cnn_data, out):
    for args in (("quantize", cnn_path, "-o", out, "--threads", "100000"),
                 ("run", cnn_path, "--data", cnn_data, "-o", out, "--threads", "-3")):
        result = run_cli(*args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--threads" in result.stderr
        assert not out.exists()


def test_version_and_an_internal_error_get_one_line(cnn_path, cnn_data, out, capsys, monkeypatch):
    from eightbit import __version__, api

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"eightbit {__version__}"

    def broken(*args, **kwargs):
        raise RuntimeError("an invariant broke\nsecond line")

    monkeypatch.setattr(api, "quantize_with", broken)
    assert main(["quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "-q"]) == 1
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "a bug in eightbit" in said and "an invariant broke" in said
    trace = said.split("the full trace is in ")[1].split(" ")[0]
    assert "RuntimeError" in open(trace).read() and not out.exists()
    with pytest.raises(RuntimeError):
        main(["--debug", "quantize", str(cnn_path), "--calibration", str(cnn_data), "-o", str(out), "-q"])


def test_an_output_onto_any_input_or_onto_what_is_not_a_file_is_refused(tmp_path, cnn_data):
    import os

    from conftest import small_cnn

    model = small_cnn()
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.weights", size_threshold=0)
    source, weights = tmp_path / "m.onnx", tmp_path / "m.weights"
    held_out = tmp_path / "held_out.npz"
    held_out.write_bytes(cnn_data.read_bytes())
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    before = {path: path.read_bytes() for path in (source, weights, cnn_data, held_out)}
    for target, said in ((weights, "overwrite an input"), (cnn_data, "overwrite an input"),
                         (held_out, "overwrite an input"), (tmp_path, "is a folder"), (fifo, "not a regular file")):
        result = run_cli("quantize", source, "--calibration", cnn_data, "--eval", held_out, "-o", target)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and said in result.stderr, result.stderr
    assert all(path.read_bytes() == data for path, data in before.items()) and fifo.is_fifo()

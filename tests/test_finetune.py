"""Fine-tuning a quantized ONNX model against its float original (eightbit finetune, PyTorch)."""

from __future__ import annotations

import collections
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")  # the qat extra; everything else is tested without it

import eightbit  # noqa: E402
from conftest import small_cnn  # noqa: E402
from eightbit import api, cli  # noqa: E402
from eightbit.demo import shipped_digits, shipped_model  # noqa: E402
from eightbit.qat.qdq_graph import QdqGraph  # noqa: E402


def _literal_qdq(path, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime running the QuantizeLinear / DequantizeLinear pairs as written (no integer fusion)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - other) ** 2))
    return 10 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / max(noise, 1e-30))


def _quantized(tmp_path, **options):
    rng = np.random.default_rng(1)
    calibration = rng.normal(0, 1, (24, 3, 16, 16)).astype(np.float32)
    source = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(softmax=False), source)
    target = tmp_path / "cnn.int8.onnx"
    eightbit.quantize(source, {"x": calibration}, output=target, speed_check=False, **options)
    return source, target, calibration


def _with_codes_moved(path, seed: int = 0) -> None:
    """Every int8 weight code moved by up to 4 steps: a model whose rounding fine-tuning can repair."""
    rng = np.random.default_rng(seed)
    model = onnx.load(path)
    for tensor in model.graph.initializer:
        codes = numpy_helper.to_array(tensor)
        if codes.dtype == np.int8 and codes.ndim > 1:
            moved = np.clip(codes.astype(np.int32) + rng.integers(-4, 5, codes.shape), -127, 127)
            tensor.CopyFrom(numpy_helper.from_array(moved.astype(np.int8), tensor.name))
    onnx.save(model, path)


def test_the_pytorch_form_of_a_quantized_model_computes_what_its_quantize_dequantize_pairs_say(tmp_path):
    _, target, calibration = _quantized(tmp_path)
    graph = QdqGraph(onnx.load(target))
    with torch.no_grad():
        ours = graph(torch.from_numpy(calibration))[0].numpy()
    assert _sqnr_db(_literal_qdq(target, calibration), ours) > 60
    written, changed = graph.write()
    assert changed == 0
    before = {t.name: numpy_helper.to_array(t) for t in onnx.load(target).graph.initializer}
    for tensor in written.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(tensor), before[tensor.name], err_msg=tensor.name)


def test_the_shipped_digits_cnn_in_pytorch_agrees_with_onnxruntime(tmp_path):
    digits = shipped_digits()
    target = tmp_path / "digits.int8.onnx"
    eightbit.quantize(shipped_model(), {"image": digits.x_train[:32]}, output=target, speed_check=False)
    graph = QdqGraph(onnx.load(target))
    x = digits.x_test[:64]
    with torch.no_grad():
        ours = graph(torch.from_numpy(x))[0].numpy()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    literal = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert _sqnr_db(literal, ours) > 60
    assert np.array_equal(literal.argmax(-1), ours.argmax(-1))


def test_fine_tuning_raises_the_held_out_sqnr_and_keeps_every_node(tmp_path):
    source, target, calibration = _quantized(tmp_path)
    _with_codes_moved(target)
    tuned_path = tmp_path / "cnn.tuned.onnx"
    tuned = api.finetune(source, target, {"x": calibration}, steps=60, output=tuned_path)
    report = api.finetune_of(tuned)
    assert report["kept"] and report["codes_changed"] > 0
    assert report["sqnr_after_db"] > report["sqnr_before_db"] + 3.0, report
    given, written = onnx.load(target), onnx.load(tuned_path)
    assert [(n.op_type, list(n.input), list(n.output)) for n in written.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in given.graph.node]
    given_codes = {t.name: numpy_helper.to_array(t) for t in given.graph.initializer}
    for tensor in written.graph.initializer:
        codes = numpy_helper.to_array(tensor)
        assert codes.dtype == given_codes[tensor.name].dtype, tensor.name
        if codes.dtype == np.int8:
            assert np.abs(codes.astype(np.int32)).max() <= 127
    # The held-out figure is what ONNX Runtime computes with the written model.
    held_out = calibration[-report["held_out_samples"]:]
    session = ort.InferenceSession(str(tuned_path), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    measured = _sqnr_db(reference.run(None, {"x": held_out})[0], session.run(None, {"x": held_out})[0])
    assert measured == pytest.approx(report["sqnr_after_db"], abs=0.01)


def test_tensors_on_one_grid_stay_on_one_grid(tmp_path):
    source, target, calibration = _quantized(tmp_path)
    graph = QdqGraph(onnx.load(target))
    with torch.no_grad():
        for parameter in graph.log_scales.values():
            parameter += 0.05
    written, _ = graph.write()
    scales = {t.name: float(numpy_helper.to_array(t)) for t in written.graph.initializer
              if t.name.endswith("_scale") and numpy_helper.to_array(t).ndim == 0}
    before = {t.name: float(numpy_helper.to_array(t)) for t in onnx.load(target).graph.initializer
              if t.name in scales}
    groups = collections.defaultdict(set)
    for name, value in before.items():
        groups[value].add(scales[name])
    assert all(len(after) == 1 for after in groups.values())
    # Biases moved onto input scale x weight scale.
    producer = {o: n for n in written.graph.node for o in n.output}
    tensors = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    for node in written.graph.node:
        if node.op_type == "Conv":
            x, w, b = (producer[name] for name in node.input)
            np.testing.assert_allclose(tensors[b.input[1]], tensors[x.input[1]] * tensors[w.input[1]], rtol=1e-6)


def test_finetune_refuses_what_it_cannot_fit(tmp_path, capsys):
    source, target, calibration = _quantized(tmp_path)
    few = tmp_path / "few.npz"
    np.savez(few, x=calibration[:5])
    out = tmp_path / "out.onnx"
    assert cli.main(["finetune", str(source), str(target), "--data", str(few), "-o", str(out), "-q"]) == 2
    assert "at least 8 samples" in capsys.readouterr().err and not out.exists()
    po2 = tmp_path / "cnn.po2.onnx"
    eightbit.quantize(source, {"x": calibration}, scheme="po2", output=po2, speed_check=False)
    data = tmp_path / "data.npz"
    np.savez(data, x=calibration)
    assert cli.main(["finetune", str(source), str(po2), "--data", str(data), "-o", str(out), "-q"]) == 2
    assert "--scheme eightbit" in capsys.readouterr().err and not out.exists()
    given = target.read_bytes()
    assert cli.main(["finetune", str(source), str(target), "--data", str(data), "-o", str(target), "-q"]) == 2
    assert "overwrite an input" in capsys.readouterr().err and target.read_bytes() == given
    assert cli.main(["finetune", str(source), str(source), "--data", str(data), "-o", str(out), "-q"]) == 2
    assert "not made by eightbit quantize" in capsys.readouterr().err and not out.exists()


def test_finetune_from_the_command_line_writes_the_model_and_says_what_it_did(tmp_path, capsys):
    source, target, calibration = _quantized(tmp_path, weight_rounding="nearest", bias_correction=False)
    data = tmp_path / "data.npz"
    np.savez(data, x=calibration)
    out = tmp_path / "tuned.onnx"
    assert cli.main(["finetune", str(source), str(target), "--data", str(data), "-o", str(out), "--steps", "20",
                     "-q"]) == 0
    said = capsys.readouterr().out
    assert "held-out SQNR (pre-softmax)" in said and str(out) in said
    assert api.finetune_of(eightbit.ir.load_model(out))["steps"] == 20


def test_finetune_without_pytorch_says_how_to_install_it(tmp_path):
    source, target, calibration = _quantized(tmp_path)
    data = tmp_path / "data.npz"
    np.savez(data, x=calibration)
    out = tmp_path / "tuned.onnx"
    script = ("import sys; sys.modules['torch'] = None\n"
              "from eightbit import cli\n"
              f"sys.exit(cli.main(['finetune', {str(source)!r}, {str(target)!r}, '--data', {str(data)!r}, "
              f"'-o', {str(out)!r}, '-q']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "pip install torch==2.13.0" in done.stderr and not out.exists()

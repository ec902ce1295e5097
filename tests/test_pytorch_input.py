"""PyTorch models in: a module with example inputs, an ExportedProgram, a .pt2 file; and the errors."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")  # the torch extra; the rest of the suite runs without it
pytest.importorskip("onnxscript")

import onnx_ir as ir  # noqa: E402

import eightbit  # noqa: E402
from eightbit.cli import main  # noqa: E402
from eightbit.measure.metrics import Agreement  # noqa: E402


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(16, 5)

    def forward(self, image):
        return self.head(torch.flatten(self.features(image), 1))


def _module_and_samples() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    module = SmallCNN()
    with torch.no_grad():  # statistics a trained BatchNorm would hold
        module.features[1].running_mean.uniform_(-0.2, 0.2)
        module.features[1].running_var.uniform_(0.5, 2.0)
    return module, torch.randn(24, 3, 12, 12)


def _sqnr_db(model: ir.Model, module: torch.nn.Module, images: torch.Tensor) -> float:
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module.eval()(images).numpy()
    got = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    metric = Agreement()
    metric.add(expected, got)
    return metric.sqnr_db


def test_a_module_is_exported_and_quantized_with_its_argument_names_and_a_free_batch(tmp_path):
    module, samples = _module_and_samples()
    module.train()
    out = tmp_path / "small.onnx"
    quantized = eightbit.quantize(module, samples[:16], example_inputs=(samples[:2],), output=out)
    assert module.training  # left in the mode it came in
    assert [value.name for value in quantized.graph.inputs] == ["image"]
    assert any(node.op_type == "QLinearConv" or node.op_type == "QuantizeLinear" for node in quantized.graph)
    assert out.is_file()
    assert _sqnr_db(quantized, module, samples[16:]) > 25.0  # integer model on held-out images vs the module
    assert _sqnr_db(quantized, module, samples[16:19]) > 25.0  # another batch size runs too


def test_an_exported_program_and_a_pt2_file_are_quantized(tmp_path):
    module, samples = _module_and_samples()
    program = torch.export.export(module.eval(), (samples[:2],))
    quantized = eightbit.quantize(program, {"image": samples[:16].numpy()})
    assert _sqnr_db(quantized, module, samples[16:18]) > 25.0
    path = tmp_path / "small.pt2"
    torch.export.save(program, path)
    np.savez(tmp_path / "calibration.npz", image=samples[:16].numpy())
    out = tmp_path / "small_int8.onnx"
    assert main(["quantize", str(path), "--calibration", str(tmp_path / "calibration.npz"), "-o", str(out), "-q",
                 "--no-report"]) == 0
    assert out.is_file() and path.is_file()
    assert main(["explain", str(out), "--float", str(path), "--runs", "2", "--json"]) == 0  # the float side exported
    data = str(tmp_path / "calibration.npz")
    assert main(["compare", str(path), str(out), "--data", data, "--no-timing", "--json"]) == 0
    assert main(["inspect", str(path), str(out), "--data", data, "--json"]) == 0


def test_pytorch_input_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    module, samples = _module_and_samples()
    out = tmp_path / "out.onnx"
    with pytest.raises(eightbit.InputError, match="example_inputs"):
        eightbit.quantize(module, samples, output=out)
    with pytest.raises(eightbit.InputError, match="for a PyTorch module"):
        eightbit.quantize(tmp_path / "model.onnx", samples, example_inputs=(samples[:2],))

    class TwoInputs(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    with pytest.raises(eightbit.InputError, match="give a dict of arrays by input name"):
        eightbit.quantize(TwoInputs(), samples, example_inputs=(samples[:2], samples[:2]))

    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # Python control flow on a value: no graph holds it

    with pytest.raises(eightbit.InputError, match="did not export to ONNX"):
        eightbit.quantize(DataDependent(), samples, example_inputs=(samples[:2],), output=out)
    assert not out.exists()
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a program")
    np.savez(tmp_path / "calibration.npz", image=samples.numpy())
    assert main(["quantize", str(bad), "--calibration", str(tmp_path / "calibration.npz"), "-o", str(out), "-q"]) == 2
    assert "bad.pt2" in capsys.readouterr().err and not out.exists() and bad.read_bytes() == b"not a program"

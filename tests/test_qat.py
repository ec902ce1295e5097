"""Quantization-aware training: the PyTorch model and the integer model it becomes compute the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the qat extra; everything else is tested without it
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

import eightbit  # noqa: E402
from eightbit import qat  # noqa: E402
from eightbit.backends import ReferenceSession  # noqa: E402
from eightbit.cli import main  # noqa: E402
from eightbit.config import ACTIVATIONS_U8  # noqa: E402
from eightbit.qat.fake_quantize import fake_quantize  # noqa: E402
from eightbit.qat.modules import QuantConv  # noqa: E402
from eightbit.quant import choose_qparams, dequantize, quantize  # noqa: E402

HERE = Path(__file__).parent


class ResidualNet(nn.Module):
    """Conv-BN-ReLU, Conv-BN-ReLU6, a residual add, max pool, average pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool, self.average = nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        z = nn.functional.relu6(self.bn2(self.conv2(y)))
        return self.fc(torch.flatten(self.average(self.pool(y + z)), 1))


def _data(seed: int = 0, count: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 1, 8, 8, generator=generator), torch.randint(0, 10, (count,), generator=generator)


def _trained(scheme: str, weight_bits: int | None = None, steps: int = 30, freeze: int = 20) -> nn.Module:
    torch.manual_seed(0)
    x, y = _data()
    model = qat.prepare(ResidualNet(), (x[:2],), scheme, weight_bits=weight_bits, freeze_batch_norm_after=freeze)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@settings(max_examples=50, deadline=None)
@given(st.floats(-50, 50), st.floats(0.1, 60), st.integers(0, 2**31 - 1))
def test_fake_quantization_is_the_converters_quantize_then_dequantize(low, width, seed):
    x = np.random.default_rng(seed).uniform(low - width, low + 2 * width, 257).astype(np.float32)
    scale, zero_point = choose_qparams(low, low + width, ACTIVATIONS_U8)
    expected = dequantize(quantize(x, scale, zero_point, ACTIVATIONS_U8), scale, zero_point)
    scale, zero_point = torch.tensor(np.asarray(scale)), torch.tensor(np.asarray(zero_point))
    got = fake_quantize(torch.from_numpy(x), scale, zero_point, 0, 255)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_gradients_pass_straight_through_inside_the_grid_and_stop_outside():
    x = torch.tensor([-1.0, 0.2, 0.49, 1.0, 3.0], requires_grad=True)
    scale, zero_point = torch.tensor(1 / 255), torch.tensor(0, dtype=torch.uint8)
    fake_quantize(x, scale, zero_point, 0, 255).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize(("scheme", "weight_bits"), [("eightbit", None), ("eightbit", 4), ("po2", None)])
def test_export_then_quantize_computes_what_training_simulated(tmp_path, scheme, weight_bits):
    model = _trained(scheme, weight_bits)
    x, _ = _data(seed=1, count=256)
    with torch.no_grad():
        simulated = model(x).numpy()
    path = qat.export(model, tmp_path / "trained.qdq.onnx")
    integer_model = eightbit.quantize(path, scheme=scheme)  # no calibration data: every grid is in the file
    integer = ReferenceSession(integer_model).run({"x": x.numpy()})["output"]
    step = float(integer_model.graph.outputs[0].producer().inputs[1].const_value.numpy())
    # The bound: PyTorch sums float products in its own order, the integer model sums exactly, so
    # a value within float rounding of a tie may round the other way, by one step, once per layer;
    # measured here it stays at one step of the output.
    assert np.abs(simulated - integer).max() <= step * 1.0001
    np.testing.assert_array_equal(simulated.argmax(1), integer.argmax(1))


def test_batch_norm_statistics_move_until_the_freeze_and_the_fold_is_the_converters():
    torch.manual_seed(0)
    x, _ = _data()
    model = qat.prepare(ResidualNet(), (x[:2],), freeze_batch_norm_after=3)
    conv = model.conv1
    assert isinstance(conv, QuantConv) and conv.batch_norm is not None
    model.train()
    means = []
    for _ in range(5):
        model(x)
        means.append(conv.batch_norm.running_mean.clone())
    assert not torch.equal(means[0], means[1]) and not torch.equal(means[1], means[2])  # batch statistics
    assert torch.equal(means[2], means[3]) and torch.equal(means[3], means[4])  # frozen after 3 steps
    # Eval mode: the conv computes with the folded weight w * gamma / sigma and bias beta + (b - mu) gamma / sigma.
    bn, weight = conv.batch_norm, conv.conv.weight
    gamma_over_sigma = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded_weight, folded_bias = conv.folded()
    torch.testing.assert_close(folded_weight, weight * gamma_over_sigma.reshape(-1, 1, 1, 1))
    torch.testing.assert_close(folded_bias, bn.bias + (conv.conv.bias - bn.running_mean) * gamma_over_sigma)


def test_prepared_model_stays_close_to_the_float_model_it_came_from():
    torch.manual_seed(0)
    x, _ = _data(count=128)
    source = ResidualNet().eval()
    model = qat.prepare(source, (x[:2],))
    with torch.no_grad():
        model.train()
        for module in model.modules():  # observe ranges without moving batch norm statistics
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        for conv in (model.conv1, model.conv2):
            conv.freeze_batch_norm_after = 0
        model(x)
        model.eval()
        expected, got = source(x), model(x)
    sqnr = 10 * torch.log10((expected**2).sum() / ((expected - got) ** 2).sum())
    assert sqnr > 25, f"{sqnr:.1f} dB"


def test_what_cannot_be_captured_or_quantized_is_said():
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(qat.CaptureError, match="torch.fx could not capture Branchy"):
        qat.prepare(Branchy(), (torch.ones(1, 3),))

    class WithSoftmax(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm = nn.Linear(4, 4), nn.LayerNorm(4)

        def forward(self, x):
            return torch.softmax(self.norm(self.fc(x)), -1)

    model = qat.prepare(WithSoftmax(), (torch.ones(2, 4),))
    assert [op.op for op in model.float_ops] == ["LayerNorm", "softmax"]


def test_weight_bits_outside_two_to_eight_are_refused():
    with pytest.raises(ValueError, match=r"value_bits must be in \[2, 8\]"):
        qat.prepare(ResidualNet(), (torch.ones(1, 1, 8, 8),), weight_bits=1)


def test_ranges_are_shared_by_every_process_under_torchrun(tmp_path):
    """Two CPU processes (gloo) with differently scaled data: one range, the union's running range."""
    worker = HERE / "qat_distributed_worker.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(worker), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    results = [tmp_path / name for name in ("rank0.json", "rank1.json", "alone.json")]
    # gloo now and then aborts a process as it exits, after every result is written; that is no failure here.
    at_exit = "terminate called without an active exception" in done.stderr and all(p.exists() for p in results)
    assert done.returncode == 0 or at_exit, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert ranks[0]["quantizer_0"] != alone["quantizer_0"]  # rank 0 alone would have seen a narrower input
    assert ranks[0]["quantizer_0"][1] > 5 * alone["quantizer_0"][1]


def test_the_cli_converts_an_exported_model_without_calibration(tmp_path, capsys):
    model = _trained("eightbit", steps=5, freeze=None)
    path = qat.export(model, tmp_path / "trained.qdq.onnx")
    out = tmp_path / "trained.int8.onnx"
    assert main(["quantize", str(path), "-o", str(out), "-q"]) == 0
    assert "weights on the grids the QDQ model gives" in capsys.readouterr().out
    assert out.exists()

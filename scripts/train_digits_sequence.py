"""Train the two sequence models that ship with eightbit and export them to ONNX.

    pip install torch==2.13.0 onnxscript && pip install -e . && python scripts/train_digits_sequence.py

Each reads a digit image as a sequence of its 8 rows (8 pixels each), the test models of
dynamic quantization (docs/quantization.md, section 13):

* src/eightbit/data/digits_transformer.onnx: a 2-layer transformer encoder (width 128,
  4 heads, feed-forward 256, pre-norm), mean-pooled, then a linear classifier;
* src/eightbit/data/digits_lstm.onnx: a 2-layer LSTM (hidden 128), its last hidden state into
  a linear classifier.

Both take "rows" [batch, 8, 8] float32 and give "logits" [batch, 10]; opset 17, dynamic batch.
Trained on the split in digits.npz (scripts/train_digits.py made it). Deterministic on one machine.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eightbit.demo import shipped_digits
from eightbit.qat.digits import train

DATA = Path(__file__).resolve().parents[1] / "src" / "eightbit" / "data"
ROWS, PIXELS, CLASSES = 8, 8, 10


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads, self.depth = heads, width // heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, self.heads, self.depth).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.depth), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(batch, tokens, width))


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = Attention(width, heads)
        self.feed_forward = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.feed_forward(self.norm2(x))


class DigitsTransformer(nn.Module):
    def __init__(self, width: int = 128, heads: int = 4, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(PIXELS, width)
        self.position = nn.Parameter(torch.randn(1, ROWS, width) * 0.02)
        self.layers = nn.Sequential(*(EncoderLayer(width, heads, hidden) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.classifier = nn.Linear(width, CLASSES)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.embed(rows) + self.position)
        return self.classifier(self.norm(x).mean(dim=1))


class DigitsLSTM(nn.Module):
    def __init__(self, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(PIXELS, hidden, num_layers=layers, batch_first=True)
        self.classifier = nn.Linear(hidden, CLASSES)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(rows)
        return self.classifier(outputs[:, -1])


def export(model: nn.Module, example: np.ndarray, path: Path) -> None:
    torch.onnx.export(
        model, (torch.from_numpy(example),), path, input_names=["rows"], output_names=["logits"],
        dynamic_axes={"rows": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
    )


def main() -> None:
    digits = shipped_digits()
    x_train, x_test = digits.x_train[:, 0], digits.x_test[:, 0]  # [N, 8 rows, 8 pixels]
    for name, build, epochs, learning_rate in (
        ("digits_transformer", DigitsTransformer, 60, 1e-3),
        ("digits_lstm", DigitsLSTM, 60, 3e-3),
    ):
        torch.manual_seed(0)
        model = build()
        train(model, x_train, digits.y_train, epochs=epochs, learning_rate=learning_rate)
        with torch.no_grad():
            accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == digits.y_test).mean()
        print(f"{name}: held-out accuracy {accuracy:.4f}")
        export(model, x_test[:1], DATA / f"{name}.onnx")


if __name__ == "__main__":
    main()

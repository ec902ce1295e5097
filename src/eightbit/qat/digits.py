"""The shipped digits CNN as a PyTorch module, and the loop that trains it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eightbit.ir import load_model
from eightbit.ir.graph import constant_array


class DigitsCNN(nn.Module):
    """Three 3x3 convs (16, 32, 64 channels) with ReLU, a 2x2 max pool, global average pool, a linear
    classifier: the architecture of the shipped model (scripts/train_digits.py trains it with batch
    norms, which the export folds into the convs)."""

    def __init__(self, batch_norm: bool = True) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            norm = [nn.BatchNorm2d(outputs)] if batch_norm else []
            return [nn.Conv2d(inputs, outputs, 3, padding=1), *norm, nn.ReLU()]

        self.features = nn.Sequential(
            *block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def from_onnx(path) -> DigitsCNN:
    """A DigitsCNN (no batch norms: the file has them folded) holding the weights of the ONNX file."""
    model = DigitsCNN(batch_norm=False)
    graph = load_model(path).graph
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    nodes = [n for n in graph if n.op_type in ("Conv", "Gemm")]
    if len(nodes) != len(layers):
        raise ValueError(f"{path}: {len(nodes)} Conv/Gemm nodes, the digits CNN has {len(layers)} layers")
    with torch.no_grad():
        for layer, node in zip(layers, nodes):
            layer.weight.copy_(torch.from_numpy(np.array(constant_array(node.inputs[1]))))
            layer.bias.copy_(torch.from_numpy(np.array(constant_array(node.inputs[2]))))
    return model.eval()


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int, learning_rate: float,
          batch: int = 64, seed: int = 0) -> None:
    """Adam with a cosine schedule on cross-entropy; deterministic for a given seed."""
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps = epochs * ((len(targets) + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(targets), batch):
            chosen = order[start:start + batch]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[chosen]), targets[chosen]).backward()
            optimizer.step()
            schedule.step()
    model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray) -> np.ndarray:
    model.eval()
    return model(torch.from_numpy(images)).numpy()

"""Train the digits CNN that ships with eightbit and export it to ONNX.

    pip install torch==2.13.0 scikit-learn onnxscript && pip install -e . && python scripts/train_digits.py

Writes src/eightbit/data/digits_cnn.onnx (float32, opset 17, dynamic batch) and
src/eightbit/data/digits.npz (scikit-learn's 8x8 handwritten digits, split once with a
fixed seed: 1,437 training images, 360 held out). Deterministic on one machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from eightbit.qat.digits import DigitsCNN

DATA = Path(__file__).resolve().parents[1] / "src" / "eightbit" / "data"
HELD_OUT = 360


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    images = digits.images.astype(np.uint8)[order]
    labels = digits.target.astype(np.uint8)[order]
    x_train, y_train = images[HELD_OUT:], labels[HELD_OUT:]
    x_test, y_test = images[:HELD_OUT], labels[:HELD_OUT]
    DATA.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(DATA / "digits.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

    def as_input(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.astype(np.float32) / 16.0).unsqueeze(1)

    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=40)
    inputs, targets = as_input(x_train), torch.from_numpy(y_train.astype(np.int64))
    for _ in range(40):
        model.train()
        permutation = torch.randperm(len(targets))
        for start in range(0, len(targets), 64):
            batch = permutation[start:start + 64]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
        scheduler.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(as_input(x_test)).argmax(1).numpy() == y_test).mean()
    print(f"held-out accuracy {accuracy:.4f}")
    torch.onnx.export(
        model, (as_input(x_test[:1]),), DATA / "digits_cnn.onnx", input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
    )


if __name__ == "__main__":
    main()

"""`eightbit demo`: the whole pipeline on the shipped digits CNN and its held-out images."""

from __future__ import annotations

import dataclasses
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from eightbit import api
from eightbit.backends import OrtSession
from eightbit.config import DEFAULT_THREADS
from eightbit.ir import load_model
from eightbit.measure.metrics import top1_accuracy
from eightbit.report.compare import compare_models, file_size

CALIBRATION_SAMPLES = 256
INPUT_NAME = "image"


@dataclasses.dataclass(frozen=True)
class Digits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def shipped_model() -> Path:
    return Path(str(resources.files("eightbit") / "data" / "digits_cnn.onnx"))


def shipped_digits() -> Digits:
    """scikit-learn's 8x8 digits as model input: [N, 1, 8, 8] float32 in [0, 1], labels uint8."""
    with np.load(Path(str(resources.files("eightbit") / "data" / "digits.npz"))) as archive:
        arrays = {key: archive[key] for key in archive.files}

    def as_input(images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / 16.0)[:, None, :, :]

    return Digits(as_input(arrays["x_train"]), arrays["y_train"], as_input(arrays["x_test"]), arrays["y_test"])


def accuracy(model_path: Path, digits: Digits, threads: int) -> float:
    session = OrtSession(model_path, threads=threads)
    scores = session.run({INPUT_NAME: digits.x_test})["logits"]
    session.close()
    return top1_accuracy(scores, digits.y_test)


def run_demo(output_dir: str | None = None, threads: int = DEFAULT_THREADS, show_progress: bool = False) -> int:
    digits = shipped_digits()
    source = shipped_model()
    with tempfile.TemporaryDirectory(prefix="eightbit-demo-") as scratch:
        folder = Path(output_dir) if output_dir else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "digits_cnn.int8.onnx"
        calibration = {INPUT_NAME: digits.x_train[:CALIBRATION_SAMPLES]}
        api.quantize(source, calibration, output=target, threads=threads, show_progress=show_progress)
        float_accuracy = accuracy(source, digits, threads)
        int8_accuracy = accuracy(target, digits, threads)
        held_out = api.load_samples({INPUT_NAME: digits.x_test}, load_model(source))
        comparison = compare_models(source, target, held_out, threads=threads)
        sizes = file_size(source), file_size(target)
        int8_model = load_model(target)
        float_nodes = api.float_nodes_of(int8_model)

        table = Table(title=f"digits CNN: {len(digits.y_test)} held-out images, calibrated on "
                            f"{CALIBRATION_SAMPLES} training images", title_justify="left")
        table.add_column("")
        table.add_column("float32", justify="right")
        table.add_column("int8", justify="right")
        table.add_row("top-1 accuracy", f"{float_accuracy:.2%}", f"{int8_accuracy:.2%}")
        table.add_row("file size", f"{sizes[0] / 1024:.1f} KiB", f"{sizes[1] / 1024:.1f} KiB")
        latency = comparison.latency
        table.add_row("latency, 1 image", f"{latency.first_ms:.3f} ms", f"{latency.second_ms:.3f} ms")
        logits = comparison.outputs["logits"]
        table.add_row("logits SQNR vs float", "", f"{logits.sqnr_db:.1f} dB")
        table.add_row("same prediction as float", "", f"{logits.top1_agreement:.2%}")
        table.add_row("nodes left in float", "", ", ".join(f"{n.op_type}" for n in float_nodes) or "none")
        console = Console()
        console.print(table)
        if output_dir:
            console.print(f"int8 model written to {target}")
    return 0

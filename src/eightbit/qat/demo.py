"""`eightbit demo --qat`: float vs post-training vs quantization-aware training on the shipped digits CNN."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from eightbit import api
from eightbit.backends import OrtSession, ReferenceSession
from eightbit.config import DEFAULT_THREADS, scheme_named
from eightbit.demo import CALIBRATION_SAMPLES, INPUT_NAME, shipped_digits, shipped_model
from eightbit.measure.metrics import top1_accuracy
from eightbit.qat import digits as digits_cnn
from eightbit.qat.export import export
from eightbit.qat.prepare import prepare

# Fine-tuning from the shipped float weights: the same recipe for every scheme and for the float control.
EPOCHS = 10
LEARNING_RATE = 1e-3
OUTPUT_NAME = "logits"
# (label, scheme, weight bits)
SCHEMES = (("8-bit", "eightbit", None), ("4-bit w", "eightbit", 4), ("po2", "po2", None),
           ("2-bit w", "eightbit", 2))
LEGEND = ("8-bit: u8 activations, s8 per-channel weights; 4-bit w / 2-bit w: weight codes in [-7, 7] / [-1, 1], "
          "8-bit activations; po2: s8 with power-of-two scales and 16-bit biases (shifts only). PTQ: the converter "
          "on the float model, calibrated on 256 training images. QAT: fine-tuned from the float weights with "
          "quantization in the loop, then exported as QDQ and converted with no calibration. Integer models run on "
          "the exact integer reference; 'ORT' is ONNX Runtime on this CPU (x86 without VNNI may saturate 8-bit "
          "weight products). max diff: largest |integer - PyTorch| logit over all images, in output steps.")


@dataclasses.dataclass(frozen=True)
class SchemeResult:
    label: str
    ptq: float  # the converter on the float model, calibrated; integer reference
    qat: float  # the trained model's fake-quantized forward in PyTorch
    integer: float  # export -> quantize (no calibration) -> integer reference
    integer_ort: float  # the same integer model in ONNX Runtime on this CPU
    same_predictions: int  # of `samples`: integer model's class == PyTorch's
    samples: int
    max_steps: float  # largest |integer - PyTorch| logit, in steps of the output grid


@dataclasses.dataclass(frozen=True)
class QatComparison:
    float_accuracy: float
    float_fine_tuned: float  # the float model trained with the same recipe (what extra training alone gives)
    schemes: list[SchemeResult]
    epochs: int
    learning_rate: float


def _reference_scores(model, images: np.ndarray) -> np.ndarray:
    return ReferenceSession(model).run({INPUT_NAME: images})[OUTPUT_NAME]


def compare_schemes(epochs: int = EPOCHS, learning_rate: float = LEARNING_RATE, threads: int = DEFAULT_THREADS,
                    schemes=SCHEMES) -> QatComparison:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    data = shipped_digits()
    source = shipped_model()
    labels = data.y_test
    float_model = digits_cnn.from_onnx(source)
    float_accuracy = top1_accuracy(digits_cnn.predict(float_model, data.x_test), labels)
    digits_cnn.train(float_model, data.x_train, data.y_train, epochs, learning_rate)
    float_fine_tuned = top1_accuracy(digits_cnn.predict(float_model, data.x_test), labels)
    results = []
    with tempfile.TemporaryDirectory(prefix="eightbit-qat-") as scratch:
        for label, name, bits in schemes:
            scheme = scheme_named(name).with_weight_bits(bits)
            ptq = api.quantize(source, {INPUT_NAME: data.x_train[:CALIBRATION_SAMPLES]}, scheme=scheme,
                               weight_range="full", threads=threads)
            trained = prepare(digits_cnn.from_onnx(source), (torch.from_numpy(data.x_test[:1]),), scheme)
            digits_cnn.train(trained, data.x_train, data.y_train, epochs, learning_rate)
            simulated = digits_cnn.predict(trained, data.x_test)
            path = Path(scratch) / f"{name}_{bits}.qdq.onnx"
            export(trained, path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
            integer_model = api.quantize(path, scheme=scheme_named(name), threads=threads)
            integer = _reference_scores(integer_model, data.x_test)
            session = OrtSession(integer_model, threads=threads)
            integer_ort = session.run({INPUT_NAME: data.x_test})[OUTPUT_NAME]
            session.close()
            step = float(integer_model.graph.outputs[0].producer().inputs[1].const_value.numpy())
            results.append(SchemeResult(
                label, top1_accuracy(_reference_scores(ptq, data.x_test), labels), top1_accuracy(simulated, labels),
                top1_accuracy(integer, labels), top1_accuracy(integer_ort, labels),
                int(np.sum(integer.argmax(1) == simulated.argmax(1))), len(labels),
                float(np.abs(integer - simulated).max() / step),
            ))
    return QatComparison(float_accuracy, float_fine_tuned, results, epochs, learning_rate)


def comparison_rows(comparison: QatComparison) -> list[list[str]]:
    rows = []
    for r in comparison.schemes:
        rows.append([r.label, f"{r.ptq:.2%}", f"{r.qat:.2%}", f"{r.integer:.2%}", f"{r.integer_ort:.2%}",
                     f"{r.same_predictions}/{r.samples}", f"{r.max_steps:.0f}"])
    return rows


COLUMNS = ("scheme", "PTQ", "QAT (PyTorch)", "QAT -> int", "... in ORT", "same class", "max diff")


def run_qat_demo(threads: int = DEFAULT_THREADS) -> int:
    from rich.console import Console
    from rich.table import Table

    comparison = compare_schemes(threads=threads)
    table = Table(title=f"digits CNN, 360 held-out images: float {comparison.float_accuracy:.2%}, "
                        f"float fine-tuned like QAT ({comparison.epochs} epochs) {comparison.float_fine_tuned:.2%}",
                  title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "scheme" else "right")
    for row in comparison_rows(comparison):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(LEGEND)
    return 0

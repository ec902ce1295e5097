"""The benchmark harness: eightbit vs ONNX Runtime's own quantizer vs fp32, on real graphs.

    pip install -e ".[dev]" && python -m benchmarks.run            # all models, writes BENCHMARKS.md
    python -m benchmarks.run --models resnet50 ppocr_cls --no-write   # a subset, table on stdout

Per model: 32 calibration samples, 16 other samples for evaluation (PP-OCR cls: 1000 lines, where
one flip is a tenth of a point of top-1), ONNX Runtime on 2 threads. Latency ratios come from
alternating blocks of fp32 and int8 runs in this one process (medians). The peer is
`onnxruntime.quantization.quantize_static` with QDQ, u8 activations, s8 per-channel weights,
min/max calibration, on the same samples. For IoU and top-1, the notes give the float model's
agreement with itself under input noise 50 dB down: the task figure's own noise floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import eightbit
from benchmarks.images import rendered_text_images
from benchmarks.models import ALL_MODELS, LIGHT_ZOO, light_model, rapidocr_model
from benchmarks.sections import write_section
from eightbit.api import load_samples
from eightbit.backends import OrtSession
from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.backends.peer import quantize_with_onnxruntime
from eightbit.demo import shipped_digits, shipped_model
from eightbit.ir import load_model
from eightbit.isa import cpu_features
from eightbit.measure.latency import interleaved
from eightbit.measure.metrics import Agreement, compared_values

CALIBRATION, EVALUATION = 32, 16
CLS_EVALUATION = 1000
# Input noise (SNR, dB) under which the float model's task agreement with itself is reported:
# about the error of rounding an 8-bit image once more.
NOISE_FLOOR_SNR_DB = 50.0


@dataclasses.dataclass
class Case:
    name: str
    path: Path
    input_name: str
    calibration: np.ndarray
    evaluation: np.ndarray  # samples along the first axis (benchmarks.dynamic: one batch)
    metric: str  # "sqnr", "iou", "top1", "accuracy" (against labels) or "text" (decoded text, benchmarks.dynamic)
    labels: np.ndarray | None = None


@dataclasses.dataclass
class Result:
    sqnr_db: float
    pre_softmax_sqnr_db: float | None
    task: float | None  # IoU, top-1 agreement or accuracy, per case
    speedup: float
    float_ms: float
    int8_ms: float
    size_ratio: float


def _input_name(path: Path) -> str:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].name


def build_cases(names: list[str]) -> list[Case]:
    cases = []
    for name in names:
        if name in LIGHT_ZOO:
            path = light_model(name)
            rng = np.random.default_rng(0)
            data = rng.normal(0, 1, (CALIBRATION + EVALUATION, 1, 3, 224, 224)).astype(np.float32)
            cases.append(Case(name, path, _input_name(path), data[:CALIBRATION], data[CALIBRATION:], "sqnr"))
        elif name == "ppocr_det":
            path = rapidocr_model(name)
            data = rendered_text_images(CALIBRATION + EVALUATION, 320, 320, seed=0)[:, None]
            cases.append(Case(name, path, "x", data[:CALIBRATION], data[CALIBRATION:], "iou"))
        elif name == "ppocr_cls":
            path = rapidocr_model(name)
            data = rendered_text_images(CALIBRATION + CLS_EVALUATION, 48, 192, seed=1)[:, None]
            cases.append(Case(name, path, "x", data[:CALIBRATION], data[CALIBRATION:], "top1"))
        elif name == "digits":
            digits = shipped_digits()
            cases.append(Case(name, shipped_model(), "image", digits.x_train[:CALIBRATION, None],
                              digits.x_test[:, None], "accuracy", digits.y_test))
        else:
            raise SystemExit(f"unknown model {name!r}")
    return cases


def ort_quantize(case: Case, target: Path) -> None:
    """The peer (eightbit.backends.peer) on the case's calibration samples."""
    samples = load_samples({case.input_name: case.calibration}, load_model(case.path))
    quantize_with_onnxruntime(case.path, target, samples)


class TaskAgreement:
    """Text-map IoU (threshold 0.3), top-1 agreement or accuracy against labels, as `metric` names."""

    def __init__(self, metric: str, labels: np.ndarray | None = None) -> None:
        self.metric, self.labels = metric, labels
        self.inters = self.unions = self.same = self.count = 0
        self.predictions: list[int] = []

    def add(self, expected: np.ndarray, got: np.ndarray) -> None:
        self.count += 1
        if self.metric == "iou":
            x, y = expected > 0.3, got > 0.3
            self.inters += int(np.logical_and(x, y).sum())
            self.unions += int(np.logical_or(x, y).sum())
        elif self.metric == "top1":
            self.same += int(np.argmax(expected.reshape(-1)) == np.argmax(got.reshape(-1)))
        elif self.metric == "accuracy":
            self.predictions.append(int(np.argmax(got.reshape(-1))))

    @property
    def value(self) -> float | None:
        if self.metric == "iou":
            return self.inters / self.unions if self.unions else 1.0
        if self.metric == "top1":
            return self.same / self.count
        if self.metric == "accuracy":
            return float(np.mean(np.array(self.predictions) == self.labels))
        return None


def float_noise_floor(case: Case, snr_db: float = NOISE_FLOOR_SNR_DB) -> float | None:
    """The float model's task agreement with itself when every evaluation input carries Gaussian noise
    `snr_db` below its power: how much of the task figure any small error can move."""
    if case.metric not in ("iou", "top1"):
        return None
    session = OrtSession(case.path)
    output = session.output_names[0]
    rng = np.random.default_rng(0)
    task = TaskAgreement(case.metric)
    for sample in case.evaluation:
        noise = rng.normal(0.0, math.sqrt(float(np.mean(sample**2)) / 10 ** (snr_db / 10)), sample.shape)
        task.add(session.run({case.input_name: sample})[output],
                 session.run({case.input_name: (sample + noise).astype(np.float32)})[output])
    return task.value


def evaluate(case: Case, float_path: Path, quant_path: Path, folder: Path, time_it: bool = True) -> Result:
    float_session = OrtSession(float_path)
    quant_session = OrtSession(quant_path)
    output = float_session.output_names[0]
    agreement, task = Agreement(), TaskAgreement(case.metric, case.labels)
    for sample in case.evaluation:
        expected = float_session.run({case.input_name: sample})[output]
        got = quant_session.run({case.input_name: sample})[output]
        agreement.add(expected, got)
        task.add(expected, got)
    pre_softmax = None
    float_model, quant_model = load_model(float_path), load_model(quant_path)
    float_logits = compared_values(float_model)[output]
    if float_logits.name != output:
        quant_logits = compared_values(quant_model)[output]
        f = session_with_outputs(float_model, [float_logits])
        q = session_with_outputs(quant_model, [quant_logits])
        logits = Agreement()
        for sample in case.evaluation:
            expected = f.run({case.input_name: sample}, [float_logits.name])[float_logits.name]
            got = q.run({case.input_name: sample}, [quant_logits.name])[quant_logits.name]
            logits.add(expected.reshape(-1), got.reshape(-1))
        pre_softmax = logits.sqnr_db
    size_ratio = quant_path.stat().st_size / case.path.stat().st_size
    if not time_it:
        return Result(agreement.sqnr_db, pre_softmax, task.value, math.nan, math.nan, math.nan, size_ratio)
    feed = {case.input_name: case.evaluation[0]}
    latency = interleaved(lambda: float_session.run(feed), lambda: quant_session.run(feed), rounds=8, per_block=3)
    return Result(agreement.sqnr_db, pre_softmax, task.value, latency.speedup, latency.first_ms, latency.second_ms,
                  size_ratio)


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "exact"
    return f"{value:.{digits}f}{suffix}"


def agreement_cells(result: Result) -> str:
    """Output SQNR dB / pre-softmax SQNR dB / task figure: the cell the side tables give a model."""
    return f"{_fmt(result.sqnr_db)} / {_fmt(result.pre_softmax_sqnr_db)} / {_fmt(result.task, 4)}"


def _task_label(case: Case) -> str:
    return {"iou": "text-map IoU", "top1": "top-1 agreement", "accuracy": "accuracy (float {:.2%})",
            "sqnr": ""}[case.metric]


def run(names: list[str]) -> tuple[list[str], list[str]]:
    cpu = cpu_features()
    rows, notes = [], []
    for case in build_cases(names):
        with tempfile.TemporaryDirectory(prefix="eightbit-bench-") as scratch:
            folder = Path(scratch)
            ours, peer = folder / "eightbit.onnx", folder / "ort.onnx"
            start = time.perf_counter()
            eightbit.quantize(case.path, {case.input_name: case.calibration}, output=ours)
            ours_seconds = time.perf_counter() - start
            try:
                ort_quantize(case, peer)
                theirs = evaluate(case, case.path, peer, folder)
            except Exception as error:  # the peer failing is a result too
                theirs = None
                notes.append(f"{case.name}: ONNX Runtime's quantizer failed: {str(error).splitlines()[0][:160]}")
            mine = evaluate(case, case.path, ours, folder)
            label = _task_label(case)
            if case.metric == "accuracy":
                session = OrtSession(case.path)
                scores = np.concatenate([session.run({case.input_name: s})["logits"] for s in case.evaluation])
                label = label.format(float(np.mean(scores.argmax(-1) == case.labels)))
            for who, result in (("eightbit", mine), ("ORT quantize_static", theirs)):
                if result is None:
                    rows.append(f"| {case.name} | {who} | failed | | | | | |")
                    continue
                rows.append(
                    f"| {case.name} | {who} | {_fmt(result.sqnr_db)} | {_fmt(result.pre_softmax_sqnr_db)} | "
                    f"{_fmt(result.task, 4)} {label} | {result.size_ratio:.3f} | "
                    f"{result.float_ms:.2f} / {result.int8_ms:.2f} | **{result.speedup:.2f}x** |"
                )
            floor = float_noise_floor(case)
            if floor is not None:
                notes.append(f"{case.name}: the float model agrees with itself to {floor:.4f} ({label}) when its "
                             f"inputs carry noise {NOISE_FLOOR_SNR_DB:.0f} dB below their power")
            print(rows[-2], rows[-1], f"(eightbit quantize {ours_seconds:.1f} s)", sep="\n", flush=True)
    header = [
        f"Machine: {platform.processor() or platform.machine()}, {cpu.summary()}; ONNX Runtime {ort.__version__}, "
        f"2 threads, batch 1; {CALIBRATION} calibration samples, {EVALUATION} other samples for evaluation "
        f"(ppocr_cls: {CLS_EVALUATION} lines; digits: the 360 held-out images).",
        "",
        "| model | quantizer | output SQNR dB | pre-softmax SQNR dB | task agreement | size ratio | "
        "fp32 / int8 ms | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    return header + rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=ALL_MODELS)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    table, notes = run(args.models)
    text = "\n".join(table + [""] + [f"- {n}" for n in notes])
    print(text)
    if not args.no_write:
        command = "python -m benchmarks.run " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python -m benchmarks.run"
        write_section("speed-and-accuracy", SECTION.format(command=command, table=text))
    return 0


SECTION = """## Speed and accuracy against ONNX Runtime's quantizer

Made by `{command}` (see benchmarks/run.py for what is measured and how).

{table}
"""

if __name__ == "__main__":
    sys.exit(main())

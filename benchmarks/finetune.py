"""The default int8 model before and after `eightbit finetune` (needs PyTorch), on the benchmark models.

    python -m benchmarks.finetune                      # writes its BENCHMARKS.md section
    python -m benchmarks.finetune --models ppocr_cls --no-write

Same samples as benchmarks/run.py: the model is quantized with default flags on the 32 calibration
samples and fine-tuned (300 steps, the defaults) on the same 32, a quarter of them held out by the
fine-tuning itself; both models are then measured on the evaluation samples, which neither saw,
and timed side by side in ONNX Runtime (interleaved blocks, medians).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import eightbit
from benchmarks.run import agreement_cells, build_cases, evaluate
from benchmarks.sections import table_harness
from eightbit import api
from eightbit.backends import OrtSession
from eightbit.measure.latency import interleaved

DEFAULT_MODELS = ["ppocr_det", "ppocr_cls", "digits", "squeezenet"]


def _side_by_side(first: Path, second: Path, feed: dict):
    one, other = OrtSession(first), OrtSession(second)
    return interleaved(lambda: one.run(feed), lambda: other.run(feed), rounds=8, per_block=3)


def run(names: list[str]) -> list[str]:
    rows = []
    for case in build_cases(names):
        with tempfile.TemporaryDirectory(prefix="eightbit-finetune-") as scratch:
            given, tuned = Path(scratch) / "int8.onnx", Path(scratch) / "tuned.onnx"
            eightbit.quantize(case.path, {case.input_name: case.calibration}, output=given)
            start = time.perf_counter()
            model = api.finetune(case.path, given, {case.input_name: case.calibration}, output=tuned,
                                 show_progress=False)
            seconds = time.perf_counter() - start
            report = api.finetune_of(model)
            before = evaluate(case, case.path, given, Path(scratch), time_it=False)
            after = evaluate(case, case.path, tuned, Path(scratch), time_it=False)
            latency = _side_by_side(given, tuned, {case.input_name: case.evaluation[0]})
            kept = "kept" if report["kept"] else "not kept"
            rows.append(f"| {case.name} | {agreement_cells(before)} | {agreement_cells(after)} | "
                        f"{report['sqnr_before_db']:.1f} -> {report['sqnr_after_db']:.1f} ({kept}) | "
                        f"{report['codes_changed']} | {seconds:.0f} s | "
                        f"{latency.first_ms:.2f} / {latency.second_ms:.2f} |")
            print(rows[-1], flush=True)
    return ["| model | default int8 | fine-tuned | held-out calibration SQNR dB | codes changed | time | "
            "int8 ms default / fine-tuned |", "|---|---|---|---|---|---|---|", *rows]


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, DEFAULT_MODELS, run, "finetune", SECTION)


SECTION = """## Fine-tuning against the float model (`eightbit finetune`)

Made by `{command}` (see benchmarks/finetune.py). The default int8 model (`eightbit quantize`,
default flags, 32 calibration samples) and the same model after `eightbit finetune` with its
defaults on those 32 samples (300 steps; docs/quantization.md, section 12a). Model cells: output
SQNR dB / pre-softmax SQNR dB / task (text-map IoU for ppocr_det, top-1 agreement with float for
ppocr_cls on 1000 lines, accuracy for digits, float 99.44%), on the evaluation samples of
benchmarks/run.py, which fine-tuning never saw. Held-out calibration SQNR: on the quarter of the
32 that fine-tuning held out to choose its result. Latency: both int8 models in ONNX Runtime,
interleaved, medians (the graph is unchanged, so any difference is noise).

{table}
"""

if __name__ == "__main__":
    raise SystemExit(main())

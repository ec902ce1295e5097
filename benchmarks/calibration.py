"""Every calibration method next to ONNX Runtime's quantize_static, on the same samples.

    python -m benchmarks.calibration                      # all models, writes its BENCHMARKS.md section
    python -m benchmarks.calibration --models digits ppocr_cls --no-write

Same samples and figures as benchmarks/run.py (32 calibration, 16 evaluation; digits: 360
held-out images); default flags except --calibrate. The peer runs with its own defaults (MinMax
calibration, QDQ, u8 activations, s8 per-channel weights) on the same calibration samples.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import eightbit
from benchmarks.models import ALL_MODELS
from benchmarks.run import agreement_cells, build_cases, evaluate, ort_quantize
from benchmarks.sections import table_harness
from eightbit.config import CALIBRATION_METHODS

# The second table: the measured choice of methods per tensor against the default, with every other
# default on (weight rounding measured, bias correction), as a user would run them.
WITH_DEFAULTS = ("minmax", "auto")


def run(names: list[str]) -> list[str]:
    rows, default_rows = [], []
    for case in build_cases(names):
        with tempfile.TemporaryDirectory(prefix="eightbit-calibration-") as scratch:
            folder = Path(scratch)
            cells = []
            for method in CALIBRATION_METHODS:
                path = folder / f"{method}.onnx"
                eightbit.quantize(case.path, {case.input_name: case.calibration}, calibrate=method,
                                  weight_rounding="nearest", bias_correction=False, equalization=False,
                                  speed_check=False, min_sqnr=None, output=path)
                cells.append(agreement_cells(evaluate(case, case.path, path, folder, time_it=False)))
            peer = folder / "ort.onnx"
            try:
                ort_quantize(case, peer)
                cells.append(agreement_cells(evaluate(case, case.path, peer, folder, time_it=False)))
            except Exception as error:  # the peer failing is a result too
                cells.append(f"failed: {str(error).splitlines()[0][:80]}")
            rows.append(f"| {case.name} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
            cells = []
            for method in WITH_DEFAULTS:
                path = folder / f"{method}-defaults.onnx"
                start = time.perf_counter()
                eightbit.quantize(case.path, {case.input_name: case.calibration}, calibrate=method,
                                  speed_check=False, output=path)
                seconds = time.perf_counter() - start
                result = evaluate(case, case.path, path, folder, time_it=False)
                cells.append(f"{agreement_cells(result)} ({seconds:.0f} s)")
            default_rows.append(f"| {case.name} | " + " | ".join(cells) + " |")
            print(default_rows[-1], flush=True)
    return [
        "| model | " + " | ".join(CALIBRATION_METHODS) + " | ORT quantize_static (MinMax) |",
        "|---|" + "---|" * (len(CALIBRATION_METHODS) + 1),
        *rows,
        "",
        "The same cells with every other default on (weight codes measured, bias correction, equalization, the "
        "eightbit scheme's floor of `--min-sqnr auto`) but the speed check, and the time quantize took:",
        "",
        "| model | " + " | ".join(WITH_DEFAULTS) + " |",
        "|---|" + "---|" * len(WITH_DEFAULTS),
        *default_rows,
    ]


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, ALL_MODELS, run, "calibration", SECTION)


SECTION = """## Calibration methods vs ONNX Runtime's quantizer

Made by `{command}` (see benchmarks/calibration.py). Each cell: output
SQNR dB / pre-softmax SQNR dB / task (text-map IoU for ppocr_det, top-1 agreement with float for
ppocr_cls, accuracy for digits; float 99.44%). Weight codes rounded to nearest,
biases not corrected, channels not equalized, no speed check, no budget (`--weight-rounding nearest
--no-bias-correction --no-equalize --no-speed-check --min-sqnr off`) in every column, so that only the
activation ranges differ.

{table}
"""

if __name__ == "__main__":
    raise SystemExit(main())

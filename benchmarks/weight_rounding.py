"""Weight codes rounded to nearest vs chosen from the calibration inputs (--weight-rounding gptq),
for the weights-only scheme and the default static one, on the benchmark models.

    python -m benchmarks.weight_rounding                  # all models, writes its BENCHMARKS.md section
    python -m benchmarks.weight_rounding --models ppocr_det --no-write

Same samples as benchmarks/run.py (32 calibration, 16 evaluation; digits: 360 held-out images);
every other flag at its default.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import eightbit
from benchmarks.models import ALL_MODELS
from benchmarks.run import agreement_cells, build_cases, evaluate
from benchmarks.sections import table_harness
from eightbit.api import WEIGHT_RANGE_KEY

# (scheme, weight rounding)
VARIANTS = (("weights", "nearest"), ("weights", "gptq"), ("eightbit", "nearest"), ("eightbit", "gptq"),
            ("eightbit", "auto"))


def run(names: list[str]) -> list[str]:
    rows = []
    for case in build_cases(names):
        with tempfile.TemporaryDirectory(prefix="eightbit-rounding-") as scratch:
            cells = []
            for scheme, rounding in VARIANTS:
                path = Path(scratch) / f"{scheme}_{rounding}.onnx"
                model = eightbit.quantize(case.path, {case.input_name: case.calibration}, scheme=scheme,
                                          weight_rounding=rounding, bias_correction=False, speed_check=False,
                                          equalization=False, min_sqnr=None, output=path)
                result = evaluate(case, case.path, path, Path(scratch), time_it=False)
                taken = ""
                if rounding == "auto":
                    note = model.metadata_props[WEIGHT_RANGE_KEY]
                    taken = " (gptq)" if "chosen codes taken" in note else " (nearest)"
                cells.append(agreement_cells(result) + taken)
            rows.append(f"| {case.name} | {' | '.join(cells)} |")
            print(rows[-1], flush=True)
    header = " | ".join(f"{scheme}, {rounding}" for scheme, rounding in VARIANTS)
    return [f"| model | {header} |", "|---|" + "---|" * len(VARIANTS), *rows]


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, ALL_MODELS, run, "weight-rounding", SECTION)


SECTION = """## Weight rounding: nearest vs chosen from the calibration inputs

Made by `{command}` (see benchmarks/weight_rounding.py). Each cell: output SQNR dB / pre-softmax
SQNR dB / task (text-map IoU for ppocr_det, top-1 agreement for ppocr_cls, accuracy for digits,
float 99.44%). `--weight-rounding gptq` (docs/quantization.md, section 2a) is the default of the
weights-only scheme, where it gains on every model. With activations quantized too the gain is
mixed, so the static scheme's default, auto, builds both and keeps gptq where the calibration
samples show at least 0.5 dB more output SQNR (pre-softmax); in brackets, what it took. Biases
are not corrected, channels not equalized and no speed check or budget runs in this table
(`--no-bias-correction --no-equalize --no-speed-check --min-sqnr off`), so that only the weight codes differ.

{table}
"""

if __name__ == "__main__":
    raise SystemExit(main())

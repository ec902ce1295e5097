"""Budgets (`--min-sqnr`) on the models whose default int8 output keeps the least: what the search kept float,
what it reached on held-out samples, and what it cost in speed and in quantization time.

    python -m benchmarks.fallback                      # writes its BENCHMARKS.md section
    python -m benchmarks.fallback --models ppocr_cls --no-write

Same samples as benchmarks/run.py: each model is quantized with default flags on the 32 calibration
samples, once with `--min-sqnr off`, once as the default leaves it (`auto`: the eightbit scheme's floor,
the one for class probabilities on ppocr_cls), once so with `--effort max` (the speed check included) and
once per further budget in BUDGETS; every model is
then measured on the evaluation samples, which the search never saw, and timed against the float model
in ONNX Runtime (interleaved blocks, medians).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import eightbit
from benchmarks.run import agreement_cells, build_cases, evaluate
from benchmarks.sections import table_harness
from eightbit import api

DEFAULT_MODELS = ["ppocr_det", "ppocr_cls"]
BUDGETS = {"ppocr_det": [27.0], "ppocr_cls": [25.0]}


def _search(model) -> str:
    fallback = api.fallback_of(model)
    if fallback is None:
        return "– | –"
    verdict = "met" if fallback.met else "NOT met"
    grids = f"{len(fallback.kept)} grid{'s' if len(fallback.kept) > 1 else ''}"
    kept = (f"{verdict}: {grids}, {fallback.order}, {len(fallback.kept_nodes)} nodes float"
            if fallback.kept else f"{verdict}: nothing kept float")
    return f"{kept} | {fallback.before:.1f} -> {fallback.after:.1f}"


def run(names: list[str]) -> list[str]:
    rows = []
    for case in build_cases(names):
        asked_for = [(None, "fast"), ("auto", "fast"), ("auto", "max"), *((b, "fast") for b in BUDGETS[case.name])]
        for budget, effort in asked_for:
            with tempfile.TemporaryDirectory(prefix="eightbit-fallback-") as scratch:
                out = Path(scratch) / "int8.onnx"
                start = time.perf_counter()
                model = eightbit.quantize(case.path, {case.input_name: case.calibration}, output=out,
                                          min_sqnr=budget, effort=effort)
                seconds = time.perf_counter() - start
                result = evaluate(case, case.path, out, Path(scratch))
                asked = ("off" if budget is None else f"default ({api.fallback_of(model).budget.limit:g} dB)"
                         if budget == "auto" else f"{budget:g} dB")
                asked += ", --effort max" if effort == "max" else ""
                rows.append(f"| {case.name} | {asked} | {_search(model)} | "
                            f"{agreement_cells(result)} | {result.float_ms:.2f} / {result.int8_ms:.2f} | "
                            f"**{result.speedup:.2f}x** | {seconds:.0f} s |")
                print(rows[-1], flush=True)
    return ["| model | --min-sqnr | search | calibration SQNR dB before -> after | held out: output SQNR dB / "
            "pre-softmax SQNR dB / task | fp32 / int8 ms | speed-up | quantize time |",
            "|---|---|---|---|---|---|---|---|", *rows]


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, DEFAULT_MODELS, run, "fallback", SECTION)


SECTION = """## Budgets: tensors kept float until the output agrees (`--min-sqnr`)

Made by `{command}` (see benchmarks/fallback.py). Default flags (`--effort fast`: nothing timed), with
`--min-sqnr off`, as they are (the eightbit scheme's floor, `--min-sqnr auto`: 25 dB, 30 dB for
ppocr_cls's class probabilities), as they are with `--effort max` (the speed check included), and with
`--min-sqnr B`, on the 32 calibration samples (docs/quantization.md, sections 11b and 11d). Search: whether
the budget was met on the calibration samples, how many tensor grids were kept float and in which
order (the most harmful first, or from the input where that met it with fewer), and how many
nodes that made float; calibration SQNR: the budget's measure (worst output SQNR, pre-softmax, on
the 32 calibration samples) before and after. Held out: on the evaluation samples of benchmarks/run.py
(text-map IoU for ppocr_det, top-1 agreement with float on 1000 lines for ppocr_cls), which the
search never saw. Latency: float and int8 in ONNX Runtime, 2 threads, interleaved, medians.

{table}
"""

if __name__ == "__main__":
    raise SystemExit(main())

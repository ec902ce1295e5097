"""Models made for TensorRT and for an NPU next to the default target, on the benchmark models.

    python -m benchmarks.targets                      # all models, writes its BENCHMARKS.md section
    python -m benchmarks.targets --models digits --no-write

Same samples as benchmarks/run.py (32 calibration, 16 evaluation; digits: 360 held-out images), default flags
but --target. Every model runs in ONNX Runtime (neither TensorRT nor an NPU runs here); each target's model is
checked against its runtime's rules (eightbit/target_rules.py) as quantize writes it, and again here.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import eightbit
from benchmarks.models import ALL_MODELS
from benchmarks.run import agreement_cells, build_cases, evaluate
from benchmarks.sections import table_harness
from eightbit.api import FLOAT_NODES_KEY
from eightbit.isa import cpu_features
from eightbit.target_rules import breaches

TARGETS = ("ort", "tensorrt", "npu")


def run(names: list[str]) -> list[str]:
    rows = []
    for case in build_cases(names):
        with tempfile.TemporaryDirectory(prefix="eightbit-targets-") as scratch:
            folder = Path(scratch)
            cells = []
            for target in TARGETS:
                path = folder / f"{target}.onnx"
                start = time.perf_counter()
                model = eightbit.quantize(case.path, {case.input_name: case.calibration}, target=target, output=path)
                seconds = time.perf_counter() - start
                result = evaluate(case, case.path, path, folder, time_it=False)
                kept = len(json.loads(model.metadata_props.get(FLOAT_NODES_KEY, "[]")))
                broken = len(breaches(model, target))
                cells.append(f"{agreement_cells(result)} | {kept} | {seconds:.1f}" +
                             (f" | {broken}" if target != "ort" else ""))
            rows.append(f"| {case.name} | {' | '.join(cells)} |")
            print(rows[-1], flush=True)
    return [
        f"CPU {cpu_features().summary()}.",
        "",
        "| model | ort: output SQNR dB / pre-softmax / task | float nodes | s | tensorrt: the same | float nodes | s | "
        "rules broken | npu (A16W8): the same | float nodes | s | rules broken |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, ALL_MODELS, run, "targets", SECTION)


SECTION = """## Formats for TensorRT and NPUs (`--target tensorrt`, `--target npu`)

Made by `{command}` (see benchmarks/targets.py). Default flags but `--target`; agreement measured in
ONNX Runtime (neither TensorRT nor an NPU runs here). Task: text-map IoU (ppocr_det), top-1 agreement
with float (ppocr_cls), accuracy (digits; float 99.44%). "float nodes": nodes left float (ops with no
integer form, and what the default 25 dB budget, 30 dB pre-softmax for class probabilities, kept float).
"rules broken": places the model breaks its runtime's rules (docs/quantization.md, section 6c), counted
again here on the written model. "s": seconds to quantize, on this machine, measured once (not side by
side).

TensorRT's int8 has zero point 0, so a tensor after a Relu uses codes 0..127: one bit less than the
default's u8, about 6 dB on that tensor; the output agrees 1-7 dB less than the default target's (the
last column the default shows), and 14 dB less on ppocr_cls, whose gates, hard-sigmoids and
hard-swishes hold one-sided ranges and where the 30 dB budget for class probabilities was out of the
search's reach, so the all-integer model was kept (the quantize report says so). A16W8's 16-bit
activations leave the weights as the main error: 0.7 (ppocr_cls, against a default model with 69 nodes
float) to 47 dB better than the default target.

{table}
"""

if __name__ == "__main__":
    raise SystemExit(main())

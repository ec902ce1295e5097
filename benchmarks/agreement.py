"""Reference kernels vs ONNX Runtime on the same quantized models, in output codes (LSB).

    python -m benchmarks.agreement                       # all models, writes its BENCHMARKS.md section
    python -m benchmarks.agreement --models ppocr_cls --no-write

Each model is quantized twice from the same 32 calibration samples: with 7-bit weights (which
ONNX Runtime computes exactly on any CPU) and with the default flags (on an x86 CPU without
VNNI these may keep 8-bit weights, whose u8 x s8 pair sums ONNX Runtime saturates at int16;
docs/quantization.md, section 4). On the 16 evaluation samples every integer op of the
reference is fed ONNX Runtime's own input codes and its output codes are compared with
ONNX Runtime's (per op); the models' dequantized outputs are compared end to end.
"""

from __future__ import annotations

import time

import onnxruntime as ort

import eightbit
from benchmarks.models import ALL_MODELS
from benchmarks.run import EVALUATION, build_cases
from benchmarks.sections import table_harness
from eightbit.api import load_samples
from eightbit.backends import ReferenceSession
from eightbit.isa import cpu_features
from eightbit.report.agreement import backend_agreement


def _row(name: str, flags: str, model, samples) -> str:
    reference = ReferenceSession(model)
    start = time.perf_counter()
    result = backend_agreement(model, samples)
    seconds = time.perf_counter() - start
    overall = result.overall()
    worst = result.worst(1)[0]
    ones = overall.histogram.get(1, 0) / max(overall.total, 1)
    more = sum(count for lsb, count in overall.histogram.items() if lsb > 1) / max(overall.total, 1)
    ends = [f"{a.identical_fraction:.4f} (max {a.max_difference})" for a in result.outputs] or ["float output"]
    bounds = [step.accumulator_bound for step in reference.integer_steps if step.accumulator_bound is not None]
    bits = max(bounds).bit_length() + 1 if bounds else 0  # with the sign
    return (f"| {name} | {flags} | {len(reference.integer_steps)} / {len(reference.float_nodes)} | "
            f"{overall.total / 1e6:.1f} M | {overall.identical_fraction:.6f} | {ones:.2e} | {more:.2e} | "
            f"{overall.max_difference} | {worst.op_type} {worst.name}: {worst.identical_fraction:.4f} "
            f"(max {worst.max_difference}) | {'; '.join(ends)} | {bits} | {seconds / samples.count:.2f} s |")


def run(names: list[str]) -> list[str]:
    rows = []
    for case in build_cases(names):
        calibration = {case.input_name: case.calibration}
        evaluation = case.evaluation[:EVALUATION]
        for weight_range in ("7bit", "auto"):
            model = eightbit.quantize(case.path, calibration, weight_range=weight_range, weight_rounding="nearest",
                                      bias_correction=False, equalization=False, speed_check=False,
                                      min_sqnr=None)
            chosen = model.metadata_props.get("eightbit.weight_range", "")
            if weight_range == "auto" and chosen.startswith("7-bit"):
                rows[-1] = rows[-1].replace("| 7-bit |", "| 7-bit (also the default) |", 1)
                continue
            label = "7-bit" if weight_range == "7bit" else "default: 8-bit"
            rows.append(_row(case.name, label, model, load_samples({case.input_name: evaluation}, model)))
            print(rows[-1], flush=True)
    cpu = cpu_features()
    return [
        f"CPU: {cpu.summary()}; ONNX Runtime {ort.__version__}; {EVALUATION} evaluation samples per model "
        "(digits: the first 16 held-out images).",
        "",
        "| model | weights | integer steps / float nodes | codes compared | identical | 1 LSB apart | "
        "> 1 LSB apart | max LSB | least identical op | model outputs identical (end to end) | "
        "accumulator bits needed | time per sample |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, ALL_MODELS, run, "reference-agreement", SECTION)


SECTION = """## Reference kernels vs ONNX Runtime (output codes, LSB)

Made by `python -m benchmarks.agreement` (see benchmarks/agreement.py). Per op: each integer op
of the reference fed ONNX Runtime's own input codes; "time per sample" is the reference
backend's plus ONNX Runtime's run and the comparison. "Accumulator bits needed": the widest
worst-case accumulator of any layer (depth x largest input span x largest weight + bias);
32 or fewer means int32 accumulators cannot overflow on any input. Weight codes rounded to
nearest, biases not corrected, channels not equalized, no speed check, no budget (`--weight-rounding
nearest --no-bias-correction --no-equalize --no-speed-check --min-sqnr off`).

{table}
"""

if __name__ == "__main__":
    raise SystemExit(main())

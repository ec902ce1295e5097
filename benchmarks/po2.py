"""The power-of-two scheme next to the default one, on the benchmark models.

    python -m benchmarks.po2                      # all models, writes its BENCHMARKS.md section
    python -m benchmarks.po2 --models digits --no-write

Same samples as benchmarks/run.py (32 calibration, 16 evaluation; digits: 360 held-out images).
Default flags otherwise: "(7-bit w)" marks where --weight-range auto chose 7-bit weights because
this CPU's fused 8-bit kernels saturate (docs/quantization.md, section 4).
Every model runs in ONNX Runtime; for po2 (per-tensor weights) the integer reference's output codes are also compared
with ONNX Runtime's (per op, as in benchmarks/agreement.py) and its task figure is given.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import eightbit
from benchmarks.models import ALL_MODELS
from benchmarks.run import _fmt, agreement_cells, build_cases, evaluate
from benchmarks.sections import table_harness
from eightbit.api import WEIGHT_RANGE_KEY, bias_saturation_of, load_samples
from eightbit.backends import ReferenceSession
from eightbit.report.agreement import backend_agreement


def _reference_task(case, model) -> float | None:
    """The task figure of the po2 model computed by the reference kernels (digits: accuracy)."""
    if case.metric != "accuracy":
        return None
    session = ReferenceSession(model)
    scores = session.run({case.input_name: np.concatenate(case.evaluation)})[session.output_names[0]]
    return float(np.mean(scores.argmax(-1) == case.labels))


# (label, scheme, weight granularity, equalization): the default, po2 as offered (per-tensor weights), po2 per
# channel, po2 per tensor with its channels equalized (eq. 35c, weighed against eq. 35 and against none).
VARIANTS = (("eightbit", "eightbit", None, False), ("po2", "po2", None, False),
            ("po2_per_channel", "po2", "per_channel", False), ("po2_equalized", "po2", None, True))


def run(names: list[str]) -> list[str]:
    rows = []
    for case in build_cases(names):
        with tempfile.TemporaryDirectory(prefix="eightbit-po2-") as scratch:
            folder = Path(scratch)
            cells, models = [], []
            for label, scheme, granularity, equalization in VARIANTS:
                path = folder / f"{label}.onnx"
                models.append(eightbit.quantize(case.path, {case.input_name: case.calibration}, scheme=scheme,
                                                weight_granularity=granularity, weight_rounding="nearest",
                                                bias_correction=False, equalization=equalization,
                                                speed_check=False, min_sqnr=None, output=path))
                result = evaluate(case, case.path, path, folder, time_it=False)
                seven = models[-1].metadata_props[WEIGHT_RANGE_KEY].startswith("7-bit")
                cells.append(agreement_cells(result) + (" (7-bit w)" if seven else ""))
            model = models[1]
            evaluation = case.evaluation if case.metric == "accuracy" else case.evaluation[:16]
            agreement = backend_agreement(model, load_samples({case.input_name: evaluation}, model)).overall()
            clipped = sum(bias_saturation_of(model).values())
            reference = _reference_task(case, model)
            rows.append(f"| {case.name} | {' | '.join(cells)} | {clipped} | {agreement.identical_fraction:.4f} "
                        f"(max {agreement.max_difference} LSB) | {_fmt(reference, 4)} |")
            print(rows[-1], flush=True)
    return [
        "| model | eightbit: output SQNR dB / pre-softmax / task | po2: output SQNR dB / pre-softmax / task | "
        "po2, per-channel weights: the same | po2, channels equalized: the same | po2 bias values clipped to 16 bits | "
        "po2 reference vs ORT: codes identical | po2 task, reference kernels |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, ALL_MODELS, run, "po2", SECTION)


SECTION = """## Power-of-two scheme vs the default

Made by `{command}` (see benchmarks/po2.py). Task: text-map IoU (ppocr_det), top-1
agreement with float (ppocr_cls), accuracy (digits; float 99.44%). "(7-bit w)", on a CPU without
VNNI only: `--weight-range auto` measured that its fused 8-bit kernels (u8 x s8 and s8 x s8 alike)
saturate and chose 7-bit weights; per-channel po2 weights use every weight code and meet that
saturation most often. Per-channel po2 weights win where channels differ in range (ppocr_cls,
ppocr_det, squeezenet) and can lose a bit of precision where they do not (the light zoo's random
weights). Weight codes rounded to nearest, biases not corrected, no budget (`--weight-rounding nearest
--no-bias-correction --no-speed-check --min-sqnr off`) in every column; channels not equalized (`--no-equalize`) but in
the column that says so, po2's default: per-tensor weights balanced between each pair of layers (eq. 35c)
and activations equalized (eq. 35), each built, and the better kept where it measures 0.5 dB better on
the calibration samples than neither. The last three columns are of po2 without equalization.

{table}
"""

if __name__ == "__main__":
    raise SystemExit(main())

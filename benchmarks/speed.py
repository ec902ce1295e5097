"""Every harness model through `eightbit bench`: ONNX Runtime and OpenVINO, float and int8, memory.

    python -m benchmarks.speed                         # all models, writes its BENCHMARKS.md section
    python -m benchmarks.speed --models shufflenet --no-write

Per model: eightbit quantizes on the harness's 32 calibration samples, for ONNX Runtime and for OpenVINO
(`--target openvino`, run in OpenVINO); eightbit.report.bench
then times every session in turn in this one process (medians, 10 blocks of at least 3 runs and
20 ms, batch 1, 2 threads), compares outputs with the float model in ONNX Runtime on the 16 evaluation
samples (digits: the 360 held-out images) and measures each session's resident memory in a
child process. OpenVINO rows appear when `openvino` is installed, NNCF rows (its quantization of the ONNX
model in ONNX Runtime, and of OpenVINO's conversion in OpenVINO, on the same calibration samples) when `nncf`
is; each peer's quantize time is listed under the table.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import eightbit
from benchmarks.models import ALL_MODELS
from benchmarks.run import Case, build_cases
from benchmarks.sections import table_harness
from eightbit.api import load_samples
from eightbit.datasets import Samples
from eightbit.ir import load_model
from eightbit.report.bench import COLUMNS, bench, bench_cells, machine_line


@dataclasses.dataclass(frozen=True)
class Benched:
    """A case's samples, and eightbit's models of it: for ONNX Runtime (`ours`) and for OpenVINO."""

    calibration: Samples
    evaluation: Samples
    ours: Path
    for_openvino: Path


def made_for_both(case: Case, scratch: Path) -> Benched:
    """The case's samples, and its model quantized by eightbit for each runtime bench runs, in `scratch`."""
    model = load_model(case.path)
    calibration = load_samples({case.input_name: case.calibration}, model)
    evaluation = load_samples({case.input_name: case.evaluation}, model)
    made = Benched(calibration, evaluation, scratch / "eightbit.onnx", scratch / "eightbit_openvino.onnx")
    eightbit.quantize(case.path, calibration, output=made.ours)
    eightbit.quantize(case.path, calibration, output=made.for_openvino, target="openvino")
    return made


def run(names: list[str]) -> list[str]:
    rows, notes = [], []
    for case in build_cases(names):
        with tempfile.TemporaryDirectory(prefix="eightbit-speed-") as scratch:
            made = made_for_both(case, Path(scratch))
            result = bench(case.path, made.ours, made.evaluation, made.calibration,
                           openvino_int8_path=made.for_openvino)
        for row in result.rows:
            rows.append(f"| {case.name} | " + " | ".join(bench_cells(row)) + " |")
            print(rows[-1], flush=True)
        notes += [f"{case.name}: {note}" for note in result.notes]
    header = [f"{machine_line(2)} (1 here); output SQNR and top-1 against the float model in ONNX Runtime "
              "(the model's first output: probabilities where it ends in a softmax).", "",
              "| model | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    return header + rows + [""] + [f"- {note}" for note in dict.fromkeys(notes)]


SECTION = """## Every runtime side by side: speed, agreement, memory

Made by `{command}` (see benchmarks/speed.py; one model: `eightbit bench MODEL --calibration DATA`).
"resident MiB (peak)": what opening the session and one run add to a fresh process's resident
memory, and its peak. Peers: ONNX Runtime's `quantize_static` and NNCF's `nncf.quantize`, their defaults.
"eightbit int8" is the model made for ONNX Runtime (the default target), run in both runtimes; "eightbit
--target openvino" the model made for OpenVINO (docs/quantization.md, section 6d).

{table}
"""


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, ALL_MODELS, run, "speed-memory-openvino", SECTION)


if __name__ == "__main__":
    sys.exit(main())

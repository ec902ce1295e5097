"""int8 models made for ONNX Runtime and for OpenVINO (--target openvino), run in OpenVINO beside its f32
and beside ONNX Runtime, on the benchmark models (needs `pip install openvino`).

    python -m benchmarks.openvino_target                  # default models, writes its BENCHMARKS.md section
    python -m benchmarks.openvino_target --models ppocr_cls --no-write

Same samples as benchmarks/run.py (32 calibration; one evaluation sample timed). Every session is
timed in turn in one process (blocks of at least 3 runs and 20 ms, rotating order), medians.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import eightbit
from benchmarks.run import _fmt, build_cases
from benchmarks.sections import table_harness
from eightbit.api import float_nodes_of, speed_check_of
from eightbit.backends import OrtSession
from eightbit.backends.onnxruntime import runtime_version
from eightbit.backends.openvino import OpenVinoSession, openvino_version
from eightbit.isa import cpu_features
from eightbit.measure.latency import interleaved_medians
from eightbit.measure.metrics import Agreement

MODELS = ["ppocr_det", "ppocr_cls", "shufflenet", "squeezenet"]
COLUMNS = ("OpenVINO f32", "OpenVINO int8 (made for ONNX Runtime)", "OpenVINO int8 (--target openvino)",
           "ONNX Runtime f32", "ONNX Runtime int8")


def _sqnr_db(expected: np.ndarray, got: np.ndarray) -> float:
    agreement = Agreement()
    agreement.add(expected, got)
    return agreement.sqnr_db


def run(names: list[str]) -> list[str]:
    rows = []
    for case in build_cases(names):
        with tempfile.TemporaryDirectory(prefix="eightbit-openvino-") as scratch:
            for_ort, for_openvino = Path(scratch) / "ort.onnx", Path(scratch) / "openvino.onnx"
            calibration = {case.input_name: case.calibration}
            eightbit.quantize(case.path, calibration, output=for_ort, speed_check=True)
            made = eightbit.quantize(case.path, calibration, target="openvino", output=for_openvino, speed_check=True)
            sessions = {COLUMNS[0]: OpenVinoSession(case.path), COLUMNS[1]: OpenVinoSession(for_ort),
                        COLUMNS[2]: OpenVinoSession(for_openvino), COLUMNS[3]: OrtSession(case.path),
                        COLUMNS[4]: OrtSession(for_ort)}
            feed = {case.input_name: case.evaluation[0]}
            expected = next(iter(sessions[COLUMNS[3]].run(feed).values()))
            agreement = [_sqnr_db(expected, next(iter(sessions[c].run(feed).values()))) for c in COLUMNS[1:3]]
            medians = interleaved_medians({c: (lambda s=s, feed=feed: s.run(feed)) for c, s in sessions.items()})
            check = speed_check_of(made)
            kept = sum("slower in int8 here" in node.reason for node in float_nodes_of(made))
            decided = ("taken" if check.taken else "not taken") if check.candidates else "nothing slower"
            cells = [f"{medians[c]:.2f}" for c in COLUMNS]
            rows.append(f"| {case.name} | {' | '.join(cells)} | {medians[COLUMNS[0]] / medians[COLUMNS[2]]:.2f}x | "
                        f"{_fmt(agreement[0])} / {_fmt(agreement[1])} | {len(check.slower)} slower; {decided}, "
                        f"{kept} nodes float |")
            print(rows[-1], flush=True)
    machine = (f"CPU {cpu_features().summary()}; OpenVINO {openvino_version()}, ONNX Runtime {runtime_version()}; "
               "2 threads, batch 1.")
    return [machine, "", f"| model | {' ms | '.join(COLUMNS)} ms | --target openvino vs OpenVINO f32 | output SQNR "
            "dB vs float, OpenVINO (made for ONNX Runtime / --target openvino) | speed check in OpenVINO |",
            "|---|" + "---|" * (len(COLUMNS) + 3), *rows]


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, MODELS, run, "openvino-target", SECTION)


SECTION = """## OpenVINO: models made for it (`--target openvino`)

Made by `{command}` (see benchmarks/openvino_target.py). Default flags with `--speed-check` (in ONNX
Runtime for the first int8 model, in OpenVINO for the second). Output SQNR: the
int8 model's first output in OpenVINO against the float model's in ONNX Runtime, on the timed sample.

{table}
"""

if __name__ == "__main__":
    raise SystemExit(main())

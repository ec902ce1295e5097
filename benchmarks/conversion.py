"""How long quantizing takes: eightbit's default beside ONNX Runtime's and NNCF's quantizers, and whether two runs
of eightbit, one beside a busy CPU, write the same bytes.

    pip install nncf && python -m benchmarks.conversion            # every harness model, writes BENCHMARKS.md
    python -m benchmarks.conversion --models squeezenet --no-write   # a subset, table on stdout

Per model, from the float file on disk to the quantized file on disk, on the 32 calibration samples of
benchmarks/run.py, one after the other in this process (2 threads where a tool takes a thread count):
- eightbit: `eightbit.quantize` with default flags (the report is not part of it);
- ORT: `quant_pre_process` (shape inference and graph optimization, as its documentation advises), then
  `quantize_static` (QDQ, u8 activations, s8 per-channel weights, min/max); the light zoo's opset-9 models are
  first upgraded to opset 14 (ORT's quantizer refuses opsets below 13), and that is timed too;
- NNCF: `nncf.quantize` on the same upgraded model (its defaults: mixed preset off, 300 subset samples, here all 32).
Same bytes: eightbit run again with a process spinning on one CPU beside it, the two files compared.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort

import eightbit
from benchmarks.models import ALL_MODELS
from benchmarks.run import Case, build_cases
from benchmarks.sections import table_harness
from eightbit.ir import load_model, save_model
from eightbit.isa import cpu_features

# A process that keeps one CPU busy until it is stopped, or its parent is.
BURNER = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"


def _eightbit(case: Case, target: Path) -> None:
    eightbit.quantize(case.path, {case.input_name: case.calibration}, output=target)


def _upgraded(case: Case, folder: Path) -> Path:
    """The model at an opset the peers take (eightbit's loader upgrades it), saved."""
    return save_model(load_model(case.path), folder / "upgraded.onnx")


def _onnxruntime(case: Case, target: Path, folder: Path, unprocessed: set[str]) -> None:
    """ORT's pre-processing and quantize_static; where the first fails (its symbolic shape inference does on
    some models), quantize_static on the model as it is, and the case's name added to `unprocessed`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(case.calibration)

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {case.input_name: row}

    upgraded, prepared = _upgraded(case, folder), folder / "ort_prepared.onnx"
    try:
        quant_pre_process(str(upgraded), str(prepared))
    except Exception:  # its symbolic shape inference fails on some models: quantized as they are, and said so
        prepared = upgraded
        unprocessed.add(case.name)
    quantize_static(str(prepared), str(target), Feeds(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)


def _nncf(case: Case, target: Path, folder: Path) -> None:
    import nncf

    model = onnx.load(_upgraded(case, folder))
    dataset = nncf.Dataset(list(case.calibration), lambda row: {case.input_name: row})
    quantized = nncf.quantize(model, dataset, subset_size=len(case.calibration))
    onnx.save(quantized, target)


def _timed(quantizer, *args) -> tuple[float | None, str]:
    start = time.perf_counter()
    try:
        quantizer(*args)
    except Exception as error:  # a peer failing is a result too
        return None, str(error).splitlines()[0][:120] if str(error) else type(error).__name__
    return time.perf_counter() - start, ""


def _same_beside_a_busy_cpu(case: Case, first: Path, folder: Path) -> bool:
    second = folder / "eightbit_busy.onnx"
    burner = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        _eightbit(case, second)
    finally:
        burner.kill()
        burner.wait()
    return first.read_bytes() == second.read_bytes()


def _cell(seconds: float | None) -> str:
    return "failed" if seconds is None else f"{seconds:.1f}"


def run(names: list[str]) -> list[str]:
    import nncf  # each tool's modules loaded before anything is timed
    import onnxruntime.quantization  # noqa: F401

    import eightbit.api  # noqa: F401

    logging.getLogger("nncf").setLevel(logging.ERROR)
    rows, notes, unprocessed, ratios = [], [], set(), {}
    for case in build_cases(names):
        with tempfile.TemporaryDirectory(prefix="eightbit-conversion-") as scratch:
            folder = Path(scratch)
            ours = folder / "eightbit.onnx"
            ours_s, why = _timed(_eightbit, case, ours)
            theirs_s, ort_why = _timed(_onnxruntime, case, folder / "ort.onnx", folder, unprocessed)
            nncf_s, nncf_why = _timed(_nncf, case, folder / "nncf.onnx", folder)
            same = _same_beside_a_busy_cpu(case, ours, folder) if ours_s is not None else False
            size_mb = case.path.stat().st_size / 2**20
            ratio = "–" if ours_s is None or theirs_s is None else f"{ours_s / theirs_s:.1f}x"
            if ours_s is not None and theirs_s is not None:
                ratios[case.name] = (ours_s, ours_s / theirs_s)
            rows.append(f"| {case.name} | {size_mb:.1f} | {_cell(ours_s)} | {_cell(theirs_s)} | {_cell(nncf_s)} | "
                        f"{ratio} | {'yes' if same else 'NO'} |")
            if case.name in unprocessed:
                notes.append(f"{case.name}: ORT's quant_pre_process failed; quantize_static ran without it")
            for who, text in (("eightbit", why), ("ORT", ort_why), ("NNCF", nncf_why)):
                if text:
                    notes.append(f"{case.name}: {who} failed: {text}")
            print(rows[-1], flush=True)
    header = [
        f"Machine: {platform.processor() or platform.machine()}, {cpu_features().summary()}; eightbit "
        f"{eightbit.__version__}, ONNX Runtime {ort.__version__}, NNCF {nncf.__version__}; 32 calibration samples.",
        "",
        "| model | float MB | eightbit s | ORT quantize_static s (with quant_pre_process) | NNCF s | eightbit / ORT | "
        "same bytes beside a busy CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    return header + rows + [""] + [f"- {note}" for note in notes] + ["", _summary(ratios)]


def _summary(ratios: dict[str, tuple[float, float]]) -> str:
    """Which models took at most 3x ORT's time, which more (a model done within a second counts as within)."""
    within = [name for name, (seconds, ratio) in ratios.items() if ratio <= 3.0 or seconds < 1.0]
    above = [f"{name} ({ratio:.1f}x)" for name, (seconds, ratio) in ratios.items() if name not in within]
    return (f"Within 3x of ORT's time (or done within a second): {', '.join(within) or 'none'}; above it: "
            f"{', '.join(above) or 'none'}.")


SECTION = """## Conversion time: eightbit, ONNX Runtime's quantizer, NNCF

Made by `{command}` (see benchmarks/conversion.py for what is timed and how).

{table}

This machine's speed drifts by 20% from run to run, for every tool alike: compare ratios, and those
roughly. Where the time goes (pyinstrument, default flags): Inception-v1, 8.0 s under the profiler:
the calibration pass 2.9 s (the float model with every tensor an output 1.3 s, eq. 34's moments 1.2 s),
eq. 34's codes 1.2 s, bias correction's pass through the quantized model in pieces 1.5 s (its pieces
compute each convolution in float: a whole run of the quantized model over the same samples takes
0.45 s), four whole-model measures 2.0 s, loading 0.35 s. PP-OCRv4 det, 20 s under the profiler, before
the floor's search below: the budget's search 9.7 s (11 probes: building 3.6 s, measuring 5.4 s),
equalization 5.3 s (three builds and two calibration passes), weight codes 3.8 s.

What moved these figures since the run before these changes (resnet50 20.9 s, squeezenet 2.3,
inception_v1 9.8, densenet121 23.7, shufflenet 3.0, vgg19 95.1, ppocr_det 16.5, ppocr_cls 6.3; 2.0x to
5.8x ORT's time; the first two changes leave the files byte-identical):
- eq. 34's column walk calls the BLAS that factored H (SciPy's) for its products. NumPy and SciPy each
  load their own OpenBLAS, whose idle threads spin for a while after each call; alternating the two
  layer by layer had both sets of threads on the two cores at once: Inception-v1's codes 2.2 s ->
  0.9 s (one 1,296-wide H took 0.14 s to factor there, 0.03 s alone).
- A candidate measured again (the budget's measure of the model weight rounding measured, bias
  correction's of the one the budget measured) runs only the batches not measured before:
  Inception-v1 7.6-8.1 s -> 7.2-7.5 s.
- The floor's budget search (default flags) measures the longest prefix it may keep float first, and
  bisects down from it where that meets the floor (docs/quantization.md, section 11b): PP-OCRv4 det
  builds and measures 6 models where doubling from one took 11 (15.9 s -> 12.9 s, run alone; 70 grids
  float where it kept 69; BENCHMARKS' main table); where even that prefix misses, one model settles it
  (BlazeFace front: 2 models where it took 7).
Tried and not kept: running bias correction's pieces on all samples at once (one run per piece instead
of one per sample and piece; Inception-v1's pass 1.3 s -> 1.5 s: the pieces' float convolutions, not
the calls, take the time); OPENBLAS_THREAD_TIMEOUT set low for the whole process (no faster once the
walk uses one BLAS).
"""


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, ALL_MODELS, run, "conversion", SECTION)


if __name__ == "__main__":
    sys.exit(main())

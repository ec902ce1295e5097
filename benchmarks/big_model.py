"""A model above protobuf's 2 GiB: each scheme's time, peak memory, file size and output SQNR.

    python -m benchmarks.big_model              # writes its BENCHMARKS.md section (about 10 minutes, 16 GB)
    python -m benchmarks.big_model --no-write

The model is built here: LAYERS MatMuls of WIDTH x WIDTH random float32 weights (1/sqrt(WIDTH)), in one
external-data file. Each scheme quantizes it in a process of its own (`eightbit.quantize`, default flags, 16
calibration samples where the scheme takes them), which reports its peak resident set; SQNR is measured in
ONNX Runtime on 4 other random rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from benchmarks.sections import write_section
from eightbit.isa import cpu_features

WIDTH, LAYERS = 8192, 11
# (label, quantize keyword arguments as JSON, whether it takes the calibration samples)
SCHEMES = (
    ("weights, 8-bit per channel", {"scheme": "weights"}, False),
    ("weights, 4-bit blocks of 32", {"scheme": "weights", "weight_bits": 4}, False),
    ("dynamic", {"scheme": "dynamic"}, False),
    ("eightbit (static)", {}, True),
)
CHILD = """
import json, resource, sys, time
import eightbit
path, calibration, output, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
start = time.perf_counter()
eightbit.quantize(path, calibration if calibration else None, output=output, **options)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _build(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    nodes, weights = [], []
    for layer in range(LAYERS):
        array = (rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) / np.float32(np.sqrt(WIDTH)))
        weights.append(numpy_helper.from_array(array.astype(np.float32), f"w{layer}"))
        nodes.append(helper.make_node("MatMul", [f"h{layer}", f"w{layer}"], [f"h{layer + 1}"], name=f"mm{layer}"))
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("h0", 1, ["batch", WIDTH])],
                              [helper.make_tensor_value_info(f"h{LAYERS}", 1, ["batch", WIDTH])], weights)
    path = folder / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path,
              save_as_external_data=True, all_tensors_to_one_file=True, location="big.onnx.data")
    return path


def _sqnr_db(float_path: Path, quantized: Path) -> float:
    import onnxruntime as ort
    x = np.random.default_rng(3).standard_normal((4, WIDTH)).astype(np.float32)
    outputs = []
    for path in (float_path, quantized):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"h0": x})[0])
        del session
    expected, got = outputs
    return float(10 * np.log10(np.sum(expected.astype(np.float64) ** 2) / np.sum((expected - got) ** 2)))


def _size(path: Path) -> int:
    data = path.with_name(f"{path.name}.data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def run() -> list[str]:
    rows = ["| scheme | seconds | peak memory GB | file GB (float: {float_gb}) | peak / float file | output SQNR dB |",
            "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="eightbit-big-") as scratch:
        folder = Path(scratch)
        path = _build(folder)
        float_bytes = _size(path)
        rows[0] = rows[0].format(float_gb=f"{float_bytes / 1e9:.2f}")
        calibration = folder / "calibration.npz"
        np.savez(calibration, h0=np.random.default_rng(2).standard_normal((16, WIDTH)).astype(np.float32))
        for index, (label, options, calibrated) in enumerate(SCHEMES):
            output = folder / f"q{index}.onnx"
            done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(calibration) if calibrated else "",
                                   str(output), json.dumps(options)], capture_output=True, text=True)
            if done.returncode != 0:
                rows.append(f"| {label} | failed: {done.stderr.strip().splitlines()[-1][:120]} | | | | |")
            else:
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                peak = figures["peak_kib"] * 1024
                rows.append(f"| {label} | {figures['seconds']:.0f} | {peak / 1e9:.1f} | {_size(output) / 1e9:.2f} | "
                            f"{peak / float_bytes:.1f}x | {_sqnr_db(path, output):.1f} |")
            print(rows[-1], flush=True)
            for leftover in folder.glob(f"q{index}.onnx*"):
                leftover.unlink()
    return rows


SECTION = """## A model above 2 GiB

`{command}` on {cpu}, 2 cores. {layers} MatMuls of {width} x {width} random float32 weights in one
external-data file; each scheme in a process of its own, default flags (16 calibration samples for the
static scheme); peak memory is that process's peak resident set. SQNR on 4 other random rows (random weights:
a check that the model is quantized and runs, not an accuracy figure).

{table}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    table = "\n".join(run())
    print(table)
    if not args.no_write:
        write_section("big-model", SECTION.format(command="python -m benchmarks.big_model",
                                                  cpu=cpu_features().summary(), layers=LAYERS, width=WIDTH,
                                                  table=table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

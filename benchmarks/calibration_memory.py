"""Peak memory of quantizing PP-OCRv4 det against the number of calibration samples.

    python -m benchmarks.calibration_memory                 # 32 and 512 samples, writes BENCHMARKS.md
    python -m benchmarks.calibration_memory --counts 32 128 --no-write

The samples (rendered text, 1.2 MB per 320x320 image) are written to an .npz first, as a user
gives them. Each count then runs in a fresh child process: note resident memory, quantize from
the file (the default flags, and --calibrate percentile, whose observers keep a fixed-size
histogram per tensor), note the process's peak. The file is read a batch at a time, so the
peak should not grow with the number of samples.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.sections import write_section
from eightbit.report.memory import status_mib

ROOT = Path(__file__).resolve().parents[1]


def write_samples(count: int, folder: Path) -> Path:
    """`count` rendered 320x320 text images as the detector's input, saved as an .npz."""
    from benchmarks.images import rendered_text_images

    path = folder / f"det_{count}.npz"
    np.savez(path, x=rendered_text_images(count, 320, 320, seed=0)[:, None])
    return path


def child(data: str, method: str) -> dict:
    """In this process: quantize from the .npz at `data`, report memory (MiB)."""
    from benchmarks.models import rapidocr_model
    from eightbit import api

    path = rapidocr_model("ppocr_det")
    before = status_mib("VmRSS")
    api.quantize(path, data, calibrate=method, min_sqnr=None)
    peak = status_mib("VmHWM")
    return {"data_mib": Path(data).stat().st_size / 2**20, "before_mib": before,
            "peak_mib": peak, "added_mib": peak - before}


def measure(data: Path, method: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.calibration_memory", "--child", str(data), method],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[32, 512])
    parser.add_argument("--methods", nargs="+", default=["minmax", "percentile"])
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1])))
        return 0
    rows = ["| calibration | samples | .npz file MiB | resident before quantize MiB | peak MiB | "
            "peak minus before (what quantizing added) MiB |", "|---|---|---|---|---|---|"]
    peaks: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        files = {count: write_samples(count, Path(folder)) for count in args.counts}
        for method in args.methods:
            for count in args.counts:
                r = measure(files[count], method)
                peaks.setdefault(method, []).append(r["peak_mib"])
                rows.append(f"| {method} | {count} | {r['data_mib']:.0f} | {r['before_mib']:.0f} | "
                            f"{r['peak_mib']:.0f} | {r['added_mib']:.0f} |")
                print(rows[-1], flush=True)
    ratios = "; ".join(f"{method} {max(p) / min(p):.2f}x" for method, p in peaks.items())
    text = "\n".join([
        "## Calibration memory (PP-OCRv4 det, 320x320)",
        "",
        f"Made by `python -m benchmarks.calibration_memory --counts {' '.join(map(str, args.counts))}` (see "
        "benchmarks/calibration_memory.py). The samples are saved to an .npz first; one fresh process per row "
        "quantizes from that file, which is read a batch at a time, with default flags but no budget "
        "(`--min-sqnr off`: what calibration takes).",
        "",
        *rows,
        "",
        f"Largest peak over smallest, per method: {ratios}.",
    ])
    if not args.no_write:
        write_section("calibration-memory", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

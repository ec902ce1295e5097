"""Peak memory of quantizing PP-OCRv4 det against the number of calibration samples.

    python -m benchmarks.calibration_memory                 # 32 and 512 samples, writes BENCHMARKS.md
    python -m benchmarks.calibration_memory --counts 32 128 --no-write

Each count runs in a fresh child process: render the samples, note resident memory, quantize
(the default flags, and --calibrate percentile, whose observers keep a fixed-size histogram per
tensor), note the process's peak. The samples are the caller's arrays and grow with their
number (1.2 MB per 320x320 image); what calibration adds on top of them should not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.sections import write_section
from eightbit.report.memory import status_mib

ROOT = Path(__file__).resolve().parents[1]


def child(count: int, method: str) -> dict:
    """In this process: render `count` samples, quantize, report memory (MiB)."""
    from benchmarks.images import rendered_text_images
    from benchmarks.models import rapidocr_model
    from eightbit import api

    path = rapidocr_model("ppocr_det")
    data = rendered_text_images(count, 320, 320, seed=0)[:, None]
    before = status_mib("VmRSS")
    api.quantize(path, {"x": data}, calibrate=method)
    peak = status_mib("VmHWM")
    return {"count": count, "method": method, "data_mib": data.nbytes / 2**20, "before_mib": before,
            "peak_mib": peak, "added_mib": peak - before}


def measure(count: int, method: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.calibration_memory", "--child", str(count), method],
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
        print(json.dumps(child(int(args.child[0]), args.child[1])))
        return 0
    rows = ["| calibration | samples | samples' arrays MiB | resident before quantize MiB | peak MiB | "
            "peak minus before (what quantizing added) MiB |", "|---|---|---|---|---|---|"]
    for method in args.methods:
        for count in args.counts:
            r = measure(count, method)
            rows.append(f"| {method} | {count} | {r['data_mib']:.0f} | {r['before_mib']:.0f} | {r['peak_mib']:.0f} | "
                        f"{r['added_mib']:.0f} |")
            print(rows[-1], flush=True)
    text = "\n".join([
        "## Calibration memory (PP-OCRv4 det, 320x320)",
        "",
        f"Made by `python -m benchmarks.calibration_memory --counts {' '.join(map(str, args.counts))}` (see "
        "benchmarks/calibration_memory.py). One fresh process per row; the samples are rendered in memory first.",
        "",
        *rows,
    ])
    if not args.no_write:
        write_section("calibration-memory", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Resident memory of one inference session, measured in a fresh process.

Run in-process, the figure would carry whatever the caller already holds (other sessions,
allocator caches); a child process that imports the runtime, loads the inputs, then opens the
session and runs it once measures the session alone:

    python -m eightbit.report.memory RUNTIME MODEL FEEDS.npz [--precision f32|bf16] [--threads N]

prints a JSON object: `resident_mib` (resident after one run, minus resident before the
session was opened) and `peak_mib` (the process's peak, minus the same baseline).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from eightbit.config import DEFAULT_THREADS


@dataclasses.dataclass(frozen=True)
class SessionMemory:
    resident_mib: float
    peak_mib: float


def status_mib(field: str) -> float:
    """A memory line of /proc/self/status (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {field}")


def memory_supported() -> bool:
    return Path("/proc/self/status").exists()


def session_memory(runtime: str, model: str | os.PathLike, feeds: dict[str, np.ndarray], scratch: Path,
                   precision: str = "f32", threads: int = DEFAULT_THREADS) -> SessionMemory:
    """Open `model` in `runtime` ("ort" or "openvino") in a child process, run `feeds` once, measure."""
    feeds_path = scratch / "memory_feeds.npz"
    np.savez(feeds_path, **feeds)
    command = [sys.executable, "-m", "eightbit.report.memory", runtime, os.fspath(model), os.fspath(feeds_path),
               "--precision", precision, "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode < 0:
        raise RuntimeError(f"{runtime} crashed (signal {-done.returncode}) opening or running {Path(model).name}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"{runtime} failed opening or running {Path(model).name}: {last}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return SessionMemory(result["resident_mib"], result["peak_mib"])


def _measure(runtime: str, model: str, feeds_path: str, precision: str, threads: int) -> dict[str, float]:
    if runtime == "ort":
        from eightbit.backends.onnxruntime import OrtSession as Session
    else:
        from eightbit.backends.openvino import OpenVinoSession as Session
    feeds = dict(np.load(feeds_path))
    baseline = status_mib("VmRSS")
    session = Session(model, threads=threads) if runtime == "ort" else Session(model, precision, threads)
    session.run(feeds)
    return {"resident_mib": round(status_mib("VmRSS") - baseline, 1),
            "peak_mib": round(status_mib("VmHWM") - baseline, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runtime", choices=("ort", "openvino"))
    parser.add_argument("model")
    parser.add_argument("feeds")
    parser.add_argument("--precision", default="f32")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args(argv)
    print(json.dumps(_measure(args.runtime, args.model, args.feeds, args.precision, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

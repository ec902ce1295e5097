"""One model, every way it can run here: speed, agreement and memory, side by side.

The float model in ONNX Runtime is the baseline. Beside it: the int8 model in ONNX Runtime,
ONNX Runtime's own quantizer's int8 model (the peer), NNCF's int8 model where NNCF is installed (in
ONNX Runtime, and its quantization of OpenVINO's conversion in OpenVINO), and where OpenVINO is
installed the float model in OpenVINO (f32 and bf16), the int8 model in OpenVINO, and the int8 model made for
OpenVINO (`--target openvino`) where one is given. Every session gets the same
inputs; latencies are medians of blocks taken in turn in this one process (so that machine load
falls on all alike) and speed-ups are ratios to the baseline's median. Agreement is measured
against the baseline's outputs on the evaluation samples; resident memory in a child process
per session (eightbit.report.memory).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from eightbit.backends import OrtSession
from eightbit.backends.onnxruntime import runtime_version
from eightbit.backends.openvino import OpenVinoSession, openvino_available, openvino_version
from eightbit.backends.peer import NNCF_NAME, PEER_NAME, nncf_available, quantize_with_nncf, quantize_with_onnxruntime
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples
from eightbit.errors import InputError, first_line
from eightbit.isa import cpu_features
from eightbit.measure.latency import interleaved_medians
from eightbit.measure.metrics import Agreement
from eightbit.measure.progress import progress_bar
from eightbit.report.compare import file_size
from eightbit.report.memory import SessionMemory, memory_supported, session_memory

BASELINE = "float, ONNX Runtime"
OPENVINO_TARGET = "eightbit --target openvino, OpenVINO"


@dataclasses.dataclass
class BenchRow:
    label: str
    runtime: str  # "ort" or "openvino"
    path: Path
    precision: str = "f32"  # the float precision asked of OpenVINO
    milliseconds: float | None = None
    speedup: float | None = None
    agreement: Agreement | None = None  # against the baseline's first output
    memory: SessionMemory | None = None
    size_bytes: int | None = None
    note: str = ""

    def as_dict(self) -> dict:
        sqnr = None if self.agreement is None else self.agreement.sqnr_db
        return {
            "label": self.label, "runtime": self.runtime, "model": str(self.path),
            "milliseconds": None if self.milliseconds is None else round(self.milliseconds, 4),
            "speedup": None if self.speedup is None else round(self.speedup, 3),
            "sqnr_db": _json_db(sqnr),
            "top1_agreement": None if self.agreement is None else self.agreement.top1_agreement,
            "resident_mib": None if self.memory is None else self.memory.resident_mib,
            "peak_mib": None if self.memory is None else self.memory.peak_mib,
            "size_bytes": self.size_bytes, "note": self.note,
        }


def _json_db(value: float | None) -> float | str | None:
    """JSON has no infinity: "inf" / "-inf" as strings, finite values to 0.01 dB."""
    if value is None:
        return None
    return round(value, 2) if math.isfinite(value) else ("inf" if value > 0 else "-inf")


@dataclasses.dataclass
class Bench:
    model: Path
    rows: list[BenchRow]
    cpu: str
    threads: int
    samples: int
    output: str  # the output compared
    notes: list[str]
    batch: int = 1  # samples in the feed each session was timed (and its memory measured) on

    def as_dict(self) -> dict:
        return {"model": str(self.model), "cpu": self.cpu, "threads": self.threads, "batch": self.batch,
                "samples": self.samples, "output_compared": self.output,
                "rows": [row.as_dict() for row in self.rows], "notes": self.notes}


def _versions() -> str:
    text = f"ONNX Runtime {runtime_version()}"
    return text + (f", OpenVINO {openvino_version()}" if openvino_available() else "")


def machine_line(threads: int, batch: int | None = None) -> str:
    return f"CPU {cpu_features().summary()}; {_versions()}; {threads} threads, " + \
        ("batch as given" if batch is None else f"batch {batch}")


def bench(
    float_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    evaluation: Samples,
    calibration: Samples | None = None,
    *,
    peer: bool = True,
    openvino: bool = True,
    openvino_int8_path: str | os.PathLike | None = None,
    memory: bool = True,
    threads: int = DEFAULT_THREADS,
    rounds: int = 10,
    show_progress: bool = False,
    batch: int = 1,
) -> Bench:
    """Measure `float_path` and `int8_path` (and the peer, and OpenVINO) on `evaluation` samples.

    `calibration` feeds the peer's quantizer; without it the peer is left out. `openvino_int8_path`, the model
    made with `--target openvino`, is run in OpenVINO beside the rest. Each session is timed, and its memory
    measured, on a feed of `batch` samples (throughput: int8 gains grow with the work per call).
    """
    float_path, int8_path = Path(float_path), Path(int8_path)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="eightbit-bench-") as scratch:
        folder = Path(scratch)
        rows = [BenchRow(BASELINE, "ort", float_path), BenchRow("eightbit int8, ONNX Runtime", "ort", int8_path)]
        peer_rows: list[BenchRow] = []
        if peer:
            peer_rows, peer_notes = _peers(float_path, calibration, folder, openvino and openvino_available())
            rows += [row for row in peer_rows if row.runtime == "ort"]
            notes += peer_notes
        if openvino and not openvino_available():
            notes.append("OpenVINO rows left out: OpenVINO is not installed (pip install openvino)")
        elif openvino:
            rows += [BenchRow("float, OpenVINO f32", "openvino", float_path, "f32"),
                     BenchRow("float, OpenVINO bf16", "openvino", float_path, "bf16"),
                     BenchRow("eightbit int8, OpenVINO", "openvino", int8_path, "f32")]
            if openvino_int8_path is not None:
                rows.append(BenchRow(OPENVINO_TARGET, "openvino", Path(openvino_int8_path), "f32"))
            rows += [row for row in peer_rows if row.runtime == "openvino"]
        feed = evaluation.feed_of(batch)
        # Each session first opens in a child process: there its resident memory is measured, and a
        # runtime that crashes on a model (OpenVINO does on some int8 graphs) loses its row, not the run.
        if memory and not memory_supported():
            notes.append("resident memory not measured: it is read from /proc (Linux only)")
        children = [row for row in rows if row.runtime == "openvino" or (memory and memory_supported())]
        for row in progress_bar(children, len(children), "memory", show_progress):
            try:
                measured = session_memory(row.runtime, row.path, feed, folder, row.precision, threads)
            except RuntimeError as error:
                if row.label == BASELINE:
                    raise InputError(f"the float model does not run: {error}") from None
                row.note = f"not run: {error}"
                continue
            if memory and memory_supported():
                row.memory = measured
        sessions = _open([row for row in rows if not row.note], threads)
        baseline = sessions[BASELINE]
        output = baseline.output_names[0]
        for row in rows:
            if row.label in sessions:
                row.agreement = Agreement()
                row.size_bytes = file_size(row.path)
        batches = progress_bar(evaluation.batches(), evaluation.number_of_batches(), "agreement", show_progress)
        for feeds in batches:
            expected = baseline.run(feeds)[output]
            for row in rows:
                if row.label in sessions:
                    row.agreement.add(expected, sessions[row.label].run(feeds, [output])[output])
        calls: dict[str, Callable[[], object]] = {
            label: (lambda session=session: session.run(feed)) for label, session in sessions.items()}
        medians = interleaved_medians(calls, rounds=rounds)
        for row in rows:
            if row.label in medians:
                row.milliseconds = medians[row.label]
                row.speedup = medians[BASELINE] / row.milliseconds
        for session in sessions.values():
            session.close()
    return Bench(float_path, rows, cpu_features().summary(), threads, evaluation.count, output, notes, batch)


def _peer(label: str, quantize: Callable[[], Path], runtime: str) -> tuple[BenchRow | None, str]:
    """The row of one peer's int8 model and a note of its quantize time, or no row and why."""
    start = time.perf_counter()
    try:
        path = quantize()
    except Exception as error:  # a peer failing on a model is a result too
        return None, f"{label} failed on this model: {first_line(error)[:160]}"
    return BenchRow(label, runtime, path), f"{label}: quantized in {time.perf_counter() - start:.1f} s"


def _peers(float_path: Path, calibration: Samples | None, folder: Path,
           openvino: bool) -> tuple[list[BenchRow], list[str]]:
    """The peers' int8 models, on the calibration samples: ONNX Runtime's quantizer in ONNX Runtime; where NNCF is
    installed, NNCF's quantization of the ONNX model in ONNX Runtime and, with OpenVINO, of OpenVINO's conversion
    of it in OpenVINO. Notes: each one's quantize time, and what was left out."""
    if calibration is None:
        return [], [f"{PEER_NAME} and {NNCF_NAME} left out: they need calibration samples (--calibration)"]
    runs = [(f"{PEER_NAME} int8, ONNX Runtime",
             lambda: quantize_with_onnxruntime(float_path, folder / "peer.onnx", calibration), "ort")]
    notes = []
    if not nncf_available():
        notes.append(f"{NNCF_NAME} rows left out: NNCF is not installed (pip install nncf)")
    else:
        runs.append((f"{NNCF_NAME} int8, ONNX Runtime",
                     lambda: quantize_with_nncf(float_path, folder / "nncf", calibration), "ort"))
        if openvino:
            runs.append((f"{NNCF_NAME} int8, OpenVINO",
                         lambda: quantize_with_nncf(float_path, folder / "nncf_ov", calibration, openvino=True),
                         "openvino"))
    rows = []
    for label, quantize, runtime in runs:
        row, note = _peer(label, quantize, runtime)
        rows += [row] if row is not None else []
        notes.append(note)
    return rows, notes


def _open(rows: list[BenchRow], threads: int) -> dict[str, OrtSession | OpenVinoSession]:
    """A session per row; a row its runtime cannot load, or whose precision this CPU lacks, gets a note."""
    sessions: dict[str, OrtSession | OpenVinoSession] = {}
    for row in rows:
        try:
            if row.runtime == "ort":
                sessions[row.label] = OrtSession(row.path, threads=threads)
                continue
            session = OpenVinoSession(row.path, row.precision, threads)
        except InputError as error:
            if row.label == BASELINE:
                raise
            row.note = str(error)
            continue
        if session.precision_used != row.precision:
            row.note = (f"not run: this CPU ({cpu_features().summary()}) has no {row.precision} arithmetic; "
                        f"OpenVINO would run {session.precision_used}, the row above")
            row.memory = None
            session.close()
            continue
        sessions[row.label] = session
    return sessions


def bench_cells(row: BenchRow) -> list[str]:
    agreement = row.agreement
    if agreement is None:
        sqnr = top1 = "–"
    else:
        value = agreement.sqnr_db
        sqnr = f"{value:.1f} dB" if math.isfinite(value) else ("exact" if value > 0 else "-inf")
        top1 = "–" if agreement.top1_agreement is None else f"{agreement.top1_agreement:.2%}"
    return [
        row.label,
        "–" if row.milliseconds is None else f"{row.milliseconds:.2f}",
        "–" if row.speedup is None else f"{row.speedup:.2f}x",
        sqnr, top1,
        "–" if row.memory is None else f"{row.memory.resident_mib:.0f} ({row.memory.peak_mib:.0f})",
        "–" if row.size_bytes is None else _size(row.size_bytes),
        row.note,
    ]


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.0f} KiB"


COLUMNS = ("runs as", "median ms", "speed-up", "output SQNR", "top-1 same", "resident MiB (peak)", "file", "note")


# What bench can recommend: the float model and eightbit's int8 model, in each runtime measured (the peers'
# models are measured beside them, not made by this tool).
@dataclasses.dataclass(frozen=True)
class Choice:
    """What a row recommends: the advice, and the --target eightbit made its model for (None: the float model)."""

    advice: str
    target: str | None


RECOMMENDABLE = {
    BASELINE: Choice("keep the float model, in ONNX Runtime", None),
    "float, OpenVINO f32": Choice("keep the float model, in OpenVINO", None),
    "float, OpenVINO bf16": Choice("keep the float model, in OpenVINO with bf16 inference precision", None),
    "eightbit int8, ONNX Runtime": Choice("eightbit's int8 model, in ONNX Runtime", "ort"),
    "eightbit int8, OpenVINO": Choice("eightbit's int8 model, in OpenVINO", "ort"),
    OPENVINO_TARGET: Choice("eightbit's int8 model made with --target openvino, in OpenVINO", "openvino"),
}


def recommended(result: Bench, min_sqnr_db: float) -> BenchRow:
    """The fastest of the float and eightbit rows whose output agrees with float to `min_sqnr_db` or better (the
    lowest median latency among those rows, timed side by side in this run)."""
    agreeing = [row for row in result.rows if row.label in RECOMMENDABLE and row.milliseconds is not None
                and row.agreement is not None and row.agreement.sqnr_db >= min_sqnr_db]
    return min(agreeing, key=lambda row: row.milliseconds)  # the baseline always agrees with itself


def recommendation(result: Bench, min_sqnr_db: float) -> str:
    """recommended(), in a line."""
    best = recommended(result, min_sqnr_db)
    speed = f"{best.milliseconds:.2f} ms, {best.speedup:.2f}x float in ONNX Runtime"
    advice = RECOMMENDABLE[best.label].advice
    if best.label.startswith("float"):
        return (f"recommended here: {advice} ({speed}): no int8 model agreeing to {min_sqnr_db:g} dB runs faster "
                "on this machine")
    return f"recommended here: {advice} ({speed}, output SQNR {_json_db(best.agreement.sqnr_db)} dB >= {min_sqnr_db:g})"


def bench_markdown(result: Bench, command: str) -> str:
    """The table as Markdown, with the machine and the command that made it."""
    lines = [f"`{command}`", "", f"{machine_line(result.threads, result.batch)}; {result.samples} samples compared "
             f"on output `{result.output}`; speed-up: float in ONNX Runtime's median / the row's median.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(bench_cells(row)) + " |" for row in result.rows]
    lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"

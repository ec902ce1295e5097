"""Running a float and a quantized model on the same samples and measuring how they differ."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path

import onnx_ir as ir

from eightbit.backends import OrtSession, open_session
from eightbit.backends.openvino import OpenVinoSession
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples
from eightbit.errors import InputError
from eightbit.ir import save_model
from eightbit.measure.latency import LatencyPair, interleaved
from eightbit.measure.metrics import Agreement
from eightbit.measure.progress import progress_bar


@dataclasses.dataclass
class Comparison:
    outputs: dict[str, Agreement]
    samples: int
    latency: LatencyPair | None
    float_bytes: int | None = None
    quantized_bytes: int | None = None
    timed_in: str | None = None  # the runtime `latency` was timed in: "ort" or "openvino"

    def as_dict(self) -> dict:
        def finite(x: float | None) -> float | str | None:
            return x if x is None or math.isfinite(x) else ("inf" if x > 0 else "-inf")

        result = {
            "samples": self.samples,
            "outputs": {
                name: {
                    "sqnr_db": finite(round(a.sqnr_db, 3) if math.isfinite(a.sqnr_db) else a.sqnr_db),
                    "max_abs_error": a.max_abs_error,
                    "top1_agreement": a.top1_agreement,
                }
                for name, a in self.outputs.items()
            },
        }
        if self.latency is not None:
            result["latency_ms"] = {"float": round(self.latency.first_ms, 4),
                                    "quantized": round(self.latency.second_ms, 4),
                                    "speedup": round(self.latency.speedup, 3), "runtime": self.timed_in}
        if self.float_bytes is not None:
            result["size_bytes"] = {"float": self.float_bytes, "quantized": self.quantized_bytes,
                                    "ratio": round(self.quantized_bytes / self.float_bytes, 4)}
        return result


def file_size(path: str | os.PathLike) -> int:
    """Bytes of a model file plus its external-data file (an OpenVINO .xml's .bin), if any; of every file in a
    model folder (SavedModel)."""
    path = Path(path)
    if path.is_dir():
        return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
    side = path.with_suffix(".bin") if path.suffix == ".xml" else path.with_name(path.name + ".data")
    return path.stat().st_size + (side.stat().st_size if side.exists() else 0)


def compare_models(
    float_model: ir.Model | str | os.PathLike,
    quantized_model: ir.Model | str | os.PathLike,
    samples: Samples,
    threads: int = DEFAULT_THREADS,
    time_it: bool = True,
    show_progress: bool = False,
    backend: str = "ort",
    timed_in: str = "ort",
) -> Comparison:
    """Agreement of `quantized_model` (run in `backend`) with `float_model` (run in ONNX Runtime), and with
    `time_it` both models' latency in `timed_in` ("ort", or "openvino" at f32 for a model made for OpenVINO),
    timed in turn (the method `bench` uses). The reference backend defines results, not speed: a comparison
    run in it is not timed.
    """
    reference = OrtSession(float_model, threads=threads)
    test = open_session(quantized_model, backend, threads=threads)
    if sorted(reference.output_names) != sorted(test.output_names):
        raise InputError(
            f"the models' outputs differ ({reference.output_names} vs {test.output_names}); "
            "compare a model with its own quantized version"
        )
    agreements = {name: Agreement() for name in reference.output_names}
    for feeds in progress_bar(samples.batches(), samples.number_of_batches(), "comparing", show_progress):
        expected, got = reference.run(feeds), test.run(feeds)
        for name, agreement in agreements.items():
            agreement.add(expected[name], got[name])
    timed = time_it and backend == "ort"
    latency = None
    if timed and timed_in == "ort":
        first = samples.single_feed()
        latency = interleaved(lambda: reference.run(first), lambda: test.run(first))
    reference.close()
    test.close()
    if timed and timed_in == "openvino":
        latency = _openvino_latency(float_model, quantized_model, samples, threads)
    return Comparison(agreements, samples.count, latency, timed_in=timed_in if timed else None)


def _openvino_latency(float_model: ir.Model | str | os.PathLike, quantized_model: ir.Model | str | os.PathLike,
                      samples: Samples, threads: int) -> LatencyPair:
    """Both models' median latency on the first sample in OpenVINO (f32 for what stays float), timed in
    alternating blocks. OpenVINO opens files: a model held in memory is written first."""
    with tempfile.TemporaryDirectory(prefix="eightbit-timed-") as scratch:
        paths = [save_model(model, Path(scratch) / f"{index}.onnx") if isinstance(model, ir.Model) else model
                 for index, model in enumerate((float_model, quantized_model))]
        sessions = [OpenVinoSession(path, threads=threads) for path in paths]
        first = samples.single_feed()
        latency = interleaved(lambda: sessions[0].run(first), lambda: sessions[1].run(first))
        for session in sessions:
            session.close()
    return latency

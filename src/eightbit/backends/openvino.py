"""OpenVINO sessions (optional: `pip install openvino`); the only module that imports openvino."""

from __future__ import annotations

import os

import numpy as np

from eightbit.config import DEFAULT_THREADS
from eightbit.errors import InputError, first_line

PRECISIONS = ("f32", "bf16")


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__.split("-")[0]


def openvino_available() -> bool:
    return openvino_version() is not None


def _compiled_model(path: str | os.PathLike, precision: str, threads: int, profiled: bool = False):
    """The model at `path` compiled for the CPU at one stream, for latency (`profiled`: with per-layer timing)."""
    try:
        import openvino
    except ImportError:
        raise InputError("OpenVINO is not installed: pip install openvino") from None
    core = openvino.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if profiled:
        config["PERF_COUNT"] = True
    try:
        return core.compile_model(core.read_model(os.fspath(path)), "CPU", config)
    except RuntimeError as error:
        first = first_line(error)
        raise InputError(f"OpenVINO cannot load the model: {first}") from None


class OpenVinoSession:
    """A CPU inference request on an .onnx file, in the float precision asked for.

    OpenVINO runs a QDQ model's quantized groups as integer kernels itself; `precision` is the
    precision of what stays float. A CPU without bf16 instructions runs f32 whatever is asked:
    `precision_used` says what it chose.
    """

    def __init__(self, path: str | os.PathLike, precision: str = "f32", threads: int = DEFAULT_THREADS) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"unknown OpenVINO precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
        self._compiled = _compiled_model(path, precision, threads)
        self._request = self._compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self._compiled.inputs]
        self.output_names = [port.get_any_name() for port in self._compiled.outputs]
        used = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision_used = used.get_type_name() if hasattr(used, "get_type_name") else str(used)

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        results = self._request.infer(feeds)
        by_name = {port.get_any_name(): np.array(value) for port, value in results.items()}
        return {name: by_name[name] for name in (outputs or self.output_names)}

    def close(self) -> None:
        self._request = None
        self._compiled = None


def profile_layers(path: str | os.PathLike, feeds: dict[str, np.ndarray], runs: int = 20,
                   threads: int = DEFAULT_THREADS) -> dict[tuple[str, ...], float]:
    """Median microseconds per run of each layer OpenVINO executes for the model at `path` (f32 for what
    stays float), keyed by the names of the model's nodes the layer computes (OpenVINO fuses several into one
    layer and records their names)."""
    compiled = _compiled_model(path, "f32", threads, profiled=True)
    sources: dict[str, tuple[str, ...]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        sources[op.get_friendly_name()] = tuple(name for name in names.split(",") if name)
    request = compiled.create_infer_request()
    times: dict[tuple[str, ...], list[float]] = {}
    for _ in range(runs):
        request.infer(feeds)
        for layer in request.profiling_info:
            if layer.status == layer.Status.EXECUTED:
                key = sources.get(layer.node_name, (layer.node_name,))
                times.setdefault(key, []).append(layer.real_time.total_seconds() * 1e6)
    return {key: float(np.median(values)) for key, values in times.items()}

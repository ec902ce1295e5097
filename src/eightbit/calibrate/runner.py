"""Run the float model over calibration samples and observe the tensors a plan quantizes."""

from __future__ import annotations

import functools

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.calibrate.histogram import HistogramObserver
from eightbit.calibrate.minmax import MinMaxObserver
from eightbit.config import DEFAULT_THREADS, IntegerFormat
from eightbit.datasets import Samples
from eightbit.errors import InputError
from eightbit.quant import power_of_two
from eightbit.quant.clipping import entropy_range, mse_range, percentile_range
from eightbit.report.progress import progress_bar

OBSERVERS = {
    "minmax": MinMaxObserver,
    "percentile": lambda: HistogramObserver(percentile_range),
    "mse": lambda: HistogramObserver(mse_range),
    "entropy": lambda: HistogramObserver(entropy_range),
}


def collect_ranges(
    model: ir.Model,
    names: list[str],
    samples: Samples,
    method: str = "minmax",
    threads: int = DEFAULT_THREADS,
    show_progress: bool = True,
    fmt: IntegerFormat | None = None,
) -> dict[str, tuple[float, float]]:
    """The clipping range of each named value of `model` over all samples, keyed by name.

    minmax: the smallest and largest value seen; percentile, mse, entropy: chosen from a
    fixed-size histogram (quant/clipping.py); with a power-of-two `fmt`, mse searches the
    exponent k instead (quant/power_of_two.py). The runtime returns one batch of the observed
    tensors at a time and the observers keep only their summaries, so memory does not grow
    with the number of samples.
    """
    try:
        observer_type = OBSERVERS[method]
    except KeyError:
        raise InputError(f"unknown calibration method {method!r}; choose one of: {', '.join(OBSERVERS)}") from None
    if method == "mse" and fmt is not None and fmt.power_of_two:
        rule = functools.partial(power_of_two.histogram_range, fmt=fmt)
        observer_type = functools.partial(HistogramObserver, rule)
    observers = {name: observer_type() for name in names}
    input_names = {v.name for v in model.graph.inputs}
    by_name = {v.name: v for node in model.graph for v in node.outputs}
    produced = [name for name in names if name not in input_names]
    session = session_with_outputs(model, [by_name[name] for name in produced], threads)
    try:
        batches = samples.batches()
        for feeds in progress_bar(batches, samples.number_of_batches(), "calibrating", show_progress):
            results = session.run(feeds, produced) if produced else {}
            for name, observer in observers.items():
                batch = feeds[name] if name in input_names else results[name]
                if not np.all(np.isfinite(batch)):
                    raise InputError(
                        f"tensor {name!r} becomes NaN or Inf on the calibration data; check the model and samples"
                    )
                observer.observe(batch)
    finally:
        session.close()
    return {name: observer.range() for name, observer in observers.items()}

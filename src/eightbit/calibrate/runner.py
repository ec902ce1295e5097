"""Run the float model over calibration samples and observe the tensors a plan quantizes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.calibrate.histogram import ChooseRange, HistogramObserver
from eightbit.calibrate.minmax import MinMaxObserver
from eightbit.config import DEFAULT_THREADS, IntegerFormat
from eightbit.datasets import Samples
from eightbit.errors import InputError
from eightbit.measure.context import PassConsumer
from eightbit.measure.progress import progress_bar
from eightbit.quant import power_of_two
from eightbit.quant.clipping import entropy_range, mse_range, percentile_range

Observer = MinMaxObserver | HistogramObserver


def _rules(fmt: IntegerFormat | None) -> dict[str, ChooseRange]:
    """Method -> how it reads a histogram; mse on a power-of-two `fmt` searches the exponent k."""
    rules = {"percentile": percentile_range, "mse": mse_range, "entropy": entropy_range}
    if fmt is not None and fmt.power_of_two:
        rules["mse"] = functools.partial(power_of_two.histogram_range, fmt=fmt)
    return rules


def collect_ranges(
    model: ir.Model,
    names: list[str],
    samples: Samples,
    method: str = "minmax",
    threads: int = DEFAULT_THREADS,
    show_progress: bool = True,
    fmt: IntegerFormat | None = None,
    consumers: Sequence[PassConsumer] = (),
) -> dict[str, tuple[float, float]]:
    """The clipping range of each named value of `model` over all samples, keyed by name (and each of
    `consumers` fed the values it names, every batch's).

    minmax: the smallest and largest value seen; percentile, mse, entropy: chosen from a
    fixed-size histogram (quant/clipping.py); with a power-of-two `fmt`, mse searches the
    exponent k instead (quant/power_of_two.py). The runtime returns one batch of the observed
    tensors at a time and the observers keep only their summaries, so memory does not grow
    with the number of samples.
    """
    if method == "minmax":
        observers = _observe(model, names, samples, MinMaxObserver, threads, show_progress, consumers)
        return {name: observer.range() for name, observer in observers.items()}
    try:
        rule = _rules(fmt)[method]
    except KeyError:
        raise InputError(f"unknown calibration method {method!r}; choose one of: minmax, "
                         f"{', '.join(_rules(fmt))}") from None
    observers = _observe(model, names, samples, lambda: HistogramObserver(rule), threads, show_progress,
                         consumers)
    return {name: observer.range() for name, observer in observers.items()}


def collect_candidate_ranges(
    model: ir.Model,
    names: list[str],
    samples: Samples,
    threads: int = DEFAULT_THREADS,
    show_progress: bool = True,
    fmt: IntegerFormat | None = None,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Name -> method -> range, for every method of collect_ranges, from one pass over the samples:
    each tensor's histogram is read by every method (the per-tensor choice of calibrate/per_tensor.py)."""
    rules = _rules(fmt)
    observers = _observe(model, names, samples, lambda: HistogramObserver(rules["percentile"]), threads,
                         show_progress)
    return {name: {"minmax": observer.seen.range(), **{method: observer.range_by(rule)
                                                      for method, rule in rules.items()}}
            for name, observer in observers.items()}


def run_pass(model: ir.Model, samples: Samples, consumers: Sequence[PassConsumer], threads: int = DEFAULT_THREADS,
             show_progress: bool = True, label: str = "calibrating") -> None:
    """Run the float `model` over every batch of `samples` once, feeding each of `consumers` the values it names
    (graph inputs or nodes' outputs), batch by batch."""
    input_names = {v.name for v in model.graph.inputs}
    by_name = {v.name: v for node in model.graph for v in node.outputs}
    wanted = list(dict.fromkeys(name for consumer in consumers for name in consumer.names))
    produced = [name for name in wanted if name not in input_names]
    session = session_with_outputs(model, [by_name[name] for name in produced], threads)
    try:
        batches = progress_bar(samples.batches(), samples.number_of_batches(), label, show_progress)
        for index, feeds in enumerate(batches):
            results = session.run(feeds, produced) if produced else {}
            for consumer in consumers:
                consumer.take(index, {name: feeds[name] if name in input_names else results[name]
                                      for name in consumer.names})
    finally:
        session.close()


class _Observing:
    """One observer per named value (a PassConsumer), refusing a value that is not finite."""

    def __init__(self, names: list[str], observer_type: Callable[[], Observer]) -> None:
        self.names = list(names)
        self.observers = {name: observer_type() for name in names}

    def take(self, index: int, values: dict[str, np.ndarray]) -> None:
        for name, observer in self.observers.items():
            if not np.all(np.isfinite(values[name])):
                raise InputError(
                    f"tensor {name!r} becomes NaN or Inf on the calibration data; check the model and samples"
                )
            observer.observe(values[name])


def _observe(
    model: ir.Model, names: list[str], samples: Samples, observer_type: Callable[[], Observer], threads: int,
    show_progress: bool, consumers: Sequence[PassConsumer] = (),
) -> dict[str, Observer]:
    """One observer per named value, fed every batch of `samples` as the float model computes it; and each of
    `consumers` fed the values it names, in the same pass."""
    observing = _Observing(names, observer_type)
    run_pass(model, samples, [observing, *consumers], threads, show_progress)
    return observing.observers

"""One quantize call's measurements: the float model's outputs on the calibration batches, computed once.

Every measured decision compares a few candidate models with the float one on the same calibration batches
(the worst output SQNR, pre-softmax, eq. 14). The float model's side of that comparison is the same for every
decision, so it is run once per float model and batch count and kept here for the call; a candidate costs one
session and one pass over the batches. A candidate measured again (the same bytes: a later step asking for more
batches, or measuring the model an earlier step kept) runs only the batches not measured before.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Protocol

import numpy as np
import onnx_ir as ir

from eightbit.backends.onnxruntime import OrtSession, serialized, session_with_outputs, with_outputs
from eightbit.datasets import Samples
from eightbit.errors import InputError
from eightbit.measure.metrics import Agreement, compared_values

# The choices measured on the calibration samples (weight range, codes, gates, equalization, bias correction)
# are measured on this many of their batches.
CHECK_BATCHES = 8


def _session(model: ir.Model, threads: int) -> tuple[OrtSession, list[str]]:
    """A session of `model` that gives its compared values (pre-softmax where a softmax ends it), and their names."""
    compared = list(compared_values(model).values())
    return session_with_outputs(model, compared, threads), [value.name for value in compared]


def _finite(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`outputs` of the float model, or InputError where one holds NaN or an infinity: nothing can agree with it."""
    for name, array in outputs.items():
        if np.asarray(array).dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise InputError(f"the float model's output {name!r} is NaN or infinite on the calibration samples; "
                             "check the model and the samples")
    return outputs


class PassConsumer(Protocol):
    """What else a pass of the float model over the calibration batches feeds (calibrate/runner.py): the values
    it `names`, batch by batch (`index` counts the batches from the first)."""

    names: list[str]

    def take(self, index: int, values: dict[str, np.ndarray]) -> None: ...


@dataclasses.dataclass
class KeptValues:
    """Values a pass of the float model over the calibration batches hands back as well, every batch's in order:
    the compared outputs a Measure needs, from the pass calibration makes anyway (a PassConsumer)."""

    names: list[str]
    batches: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)

    def take(self, index: int, values: dict[str, np.ndarray]) -> None:
        self.batches.append(values)


class Measure:
    """The calibration samples of one quantize call, and the float outputs every candidate is measured against.

    Kept per float model for the call, for as many batches as asked so far; the float model is held, so it
    stays the one meant.
    """

    def __init__(self, samples: Samples, threads: int) -> None:
        self.samples, self.threads = samples, threads
        self._expected: dict[int, tuple[ir.Model, list[str], list[dict]]] = {}
        # (the reference's id, a digest of the candidate's bytes) -> its output powers, batch by batch
        self._powers_seen: dict[tuple[int, bytes], list[list[tuple[float, float]]]] = {}

    def _float_outputs(self, reference: ir.Model, batches: int) -> tuple[list[str], list[dict]]:
        """The reference's compared outputs on the first `batches` batches: those computed before for it, and
        the rest run now (a later step asking for more batches runs only the ones it adds)."""
        key = id(reference)
        _, names, outputs = self._expected.get(key, (reference, [], []))
        wanted = min(batches, self.samples.number_of_batches())
        if len(outputs) < wanted:
            session, names = _session(reference, self.threads)
            for index, feeds in enumerate(self.samples.batches()):
                if index >= wanted:
                    break
                if index >= len(outputs):
                    outputs.append(_finite(session.run(feeds, names)))
            session.close()
            self._expected[key] = (reference, names, outputs)
        return names, outputs[:batches]

    def wanted(self, reference: ir.Model) -> KeptValues | None:
        """What a pass of `reference` over every calibration batch should keep for this measure (its compared
        values), where it holds none for `reference` yet; else None."""
        if id(reference) in self._expected:
            return None
        return KeptValues([value.name for value in compared_values(reference).values()])

    def adopt(self, reference: ir.Model, kept: KeptValues) -> None:
        """`reference`'s compared values on the first calibration batches, from a pass that kept them."""
        held = self._expected.get(id(reference), (reference, [], []))[2]
        for batch in kept.batches:
            _finite(batch)
        if len(kept.batches) > len(held):
            self._expected[id(reference)] = (reference, kept.names, kept.batches)

    def worst_sqnr_db(self, models: list[ir.Model], reference: ir.Model,
                      batches: int = CHECK_BATCHES) -> list[float]:
        """Worst SQNR (eq. 14) of each model's outputs (pre-softmax), as ONNX Runtime's fused kernels compute
        them, vs `reference`'s, on the first `batches` calibration batches."""
        expected_names, expected = self._float_outputs(reference, batches)
        worst = []
        for model in models:
            powers = self._powers(model, reference, expected_names, expected)[:len(expected)]
            worst.append(min(Agreement(signal=sum(batch[i][0] for batch in powers),
                                       noise=sum(batch[i][1] for batch in powers)).sqnr_db
                             for i in range(len(expected_names))))
        return worst

    def _powers(self, model: ir.Model, reference: ir.Model, expected_names: list[str],
                expected: list[dict]) -> list[list[tuple[float, float]]]:
        """(signal, noise) power of each compared output of `model` against `reference`'s, batch by batch, on at
        least the batches of `expected`: those measured before for the same bytes and the rest run now."""
        compared = list(compared_values(model).values())
        with with_outputs(model, compared):
            source = serialized(model)
        key = None if source is None else (id(reference), hashlib.blake2b(source, digest_size=16).digest())
        powers = self._powers_seen.setdefault(key, []) if key is not None else []
        if len(powers) < len(expected):
            session = OrtSession(source, self.threads) if source is not None else \
                session_with_outputs(model, compared, self.threads)
            names = [value.name for value in compared]
            for index, (feeds, wanted) in enumerate(zip(self.samples.batches(), expected)):
                if index < len(powers):
                    continue
                got = session.run(feeds, names)
                metrics = [Agreement() for _ in names]
                for metric, name, expected_name in zip(metrics, names, expected_names):
                    metric.add(wanted[expected_name], got[name])
                powers.append([(metric.signal, metric.noise) for metric in metrics])
            session.close()
        return powers

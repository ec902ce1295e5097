"""Fine-tuning a quantized ONNX model against its float original on the calibration samples.

The int8 model made by `eightbit quantize` runs in PyTorch (qat/qdq_graph.py) with its weight,
bias and constant codes and its activation scales learnable; the float model, in ONNX Runtime,
gives the values to match (distillation: no labels): each output, or the input of the softmax
that makes it. The loss is their squared error relative to their power (the reciprocal of their
SQNR, docs/quantization.md eq. 37), the optimizer Adam with a cosine schedule.

A few samples are easily memorized, so a quarter of them are held out: the held-out SQNR is
measured as training goes, the parameters where it was best are the ones written, and the
result is kept only where ONNX Runtime, running the written model, measures it better on those
held-out samples than the model given. Images (float inputs of rank 4) are varied at every
step by flips, circular shifts and a small change of contrast and brightness; the float model
is run on each varied input, so the targets stay exact.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import onnx
import onnx_ir as ir
import torch

from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.config import DEFAULT_THREADS
from eightbit.datasets import Samples
from eightbit.errors import InputError
from eightbit.ir import as_model
from eightbit.measure.metrics import Agreement, compared_values
from eightbit.measure.progress import progress_bar
from eightbit.qat.qdq_graph import QdqGraph

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)

DEFAULT_STEPS = 300
DEFAULT_BATCH = 4
CODE_LEARNING_RATE = 0.02  # grid steps per Adam step (biases: steps of their layer's output grid)
SCALE_LEARNING_RATE = 0.0003  # natural log of the scale per Adam step (section 12a: why not more)
LEAST_SAMPLES = 8
EVALUATIONS = 10  # held-out measurements over the whole run


@dataclasses.dataclass
class FinetuneReport:
    steps: int
    training_samples: int
    held_out_samples: int
    sqnr_before_db: float
    sqnr_after_db: float
    best_step: int
    kept: bool
    codes_changed: int
    scales_learned: int
    seconds: float

    def as_dict(self) -> dict:
        return {key: (round(value, 3) if isinstance(value, float) else value)
                for key, value in dataclasses.asdict(self).items()}


def _augment(feed: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    varied = {}
    for name, x in feed.items():
        if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
            varied[name] = x
            continue
        if rng.random() < 0.5:
            x = x[..., ::-1]
        if rng.random() < 0.5:
            x = x[..., ::-1, :]
        x = np.roll(x, (int(rng.integers(x.shape[-2])), int(rng.integers(x.shape[-1]))), axis=(-2, -1))
        mean = float(x.mean())
        x = (x - mean) * rng.uniform(0.8, 1.2) + mean + rng.uniform(-0.1, 0.1) * float(x.std())
        varied[name] = np.ascontiguousarray(x, dtype=feed[name].dtype)
    return varied


def _relative_error(outputs: list[torch.Tensor], targets: list[np.ndarray]) -> torch.Tensor:
    """Eq. 37."""
    terms = []
    for output, target in zip(outputs, targets):
        target = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
        terms.append(((output - target) ** 2).sum() / (target ** 2).sum().clamp_min(1e-12))
    return torch.stack(terms).mean()


def _worst_sqnr_db(pairs: list[tuple[list[np.ndarray], list[np.ndarray]]]) -> float:
    """The worst compared value's SQNR (eq. 14) over all samples: pairs of (reference, test) lists."""
    agreements = [Agreement() for _ in pairs[0][0]]
    for references, tests in pairs:
        for agreement, reference, test in zip(agreements, references, tests):
            agreement.add(reference, test)
    return min(agreement.sqnr_db for agreement in agreements)


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    steps: int = DEFAULT_STEPS
    batch: int = DEFAULT_BATCH
    augment: bool = True
    learn_scales: bool = True
    seed: int = 0
    threads: int = DEFAULT_THREADS
    show_progress: bool = True


def finetune(float_model: str, quantized: onnx.ModelProto, samples: Samples,
             options: FinetuneOptions = FinetuneOptions()) -> tuple[onnx.ModelProto, FinetuneReport]:
    """The quantized model with its codes and scales fitted to the float model's outputs on `samples`,
    or the model given where the held-out samples measure that better; and what was done."""
    start = time.perf_counter()
    if options.steps < 1:
        raise InputError(f"--steps {options.steps}: fine-tuning needs at least one step")
    feeds = _one_sample_each(samples)
    if len(feeds) < LEAST_SAMPLES:
        raise InputError(f"fine-tuning needs at least {LEAST_SAMPLES} samples (a quarter is held out to "
                         f"measure it), got {len(feeds)}; give more calibration samples")
    held_out = max(2, len(feeds) // 4)
    threads_before = torch.get_num_threads()
    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    fitting = None
    try:
        fitting = Fitting(float_model, quantized, feeds[:-held_out], feeds[-held_out:], options)
        tuned, report = fitting.run()
    finally:
        if fitting is not None:
            fitting.close()
        torch.set_num_threads(threads_before)
    report.seconds = time.perf_counter() - start
    return tuned, report


class Fitting:
    """One fine-tuning run: the float model as teacher, the quantized one as a learnable PyTorch graph.

    Both are compared where the report compares them (measure/metrics.compared_values): each float
    output, or the input of the softmax that makes it, whose saturation would hide differences."""

    def __init__(self, float_model: str, quantized: onnx.ModelProto, training: list[dict[str, np.ndarray]],
                 held_out: list[dict[str, np.ndarray]], options: FinetuneOptions) -> None:
        self.quantized, self.training, self.held_out, self.options = quantized, training, held_out, options
        self.rng = np.random.default_rng(options.seed)
        self.graph = QdqGraph(quantized, learn_scales=options.learn_scales)
        reference, student = as_model(float_model), ir.from_proto(quantized)
        reference_values, student_values = compared_values(reference), compared_values(student)
        self.floats = [output.name for output in student.graph.outputs if output.dtype in FLOAT_TYPES]
        if not self.floats:
            raise InputError("the quantized model has no float output to compare with the float model's")
        self.teacher_values = [reference_values[name] for name in self.floats]
        self.compared = [student_values[name].name for name in self.floats]
        self.teacher = session_with_outputs(reference, self.teacher_values, threads=options.threads)
        self.references = [self.teach(feed) for feed in held_out]

    def teach(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.teacher.run(feed, [value.name for value in self.teacher_values])
        return [results[value.name] for value in self.teacher_values]

    def run(self) -> tuple[onnx.ModelProto, FinetuneReport]:
        steps = self.options.steps
        optimizer = torch.optim.Adam([
            {"params": list(self.graph.codes.parameters()), "lr": CODE_LEARNING_RATE},
            {"params": list(self.graph.log_scales.parameters()), "lr": SCALE_LEARNING_RATE},
        ])
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        before = self.held_out_in_onnxruntime(self.quantized)
        best_sqnr, best_step, best_state = self.held_out_sqnr(), 0, copy.deepcopy(self.graph.state_dict())
        every = max(1, steps // EVALUATIONS)
        for step in progress_bar(range(1, steps + 1), steps, "fine-tuning", self.options.show_progress):
            optimizer.zero_grad()
            self.accumulate_gradients()
            optimizer.step()
            schedule.step()
            if step % every == 0 or step == steps:
                sqnr = self.held_out_sqnr()
                if sqnr > best_sqnr:
                    best_sqnr, best_step, best_state = sqnr, step, copy.deepcopy(self.graph.state_dict())
        self.graph.load_state_dict(best_state)
        tuned, changed = self.graph.write()
        after = self.held_out_in_onnxruntime(tuned)
        kept = after > before
        report = FinetuneReport(steps, len(self.training), len(self.held_out), before, after, best_step, kept,
                                changed if kept else 0, len(self.graph.log_scales), 0.0)
        return (tuned if kept else self.quantized), report

    def accumulate_gradients(self) -> None:
        """Eq. 37's gradient over one batch of training samples, each varied where it is an image."""
        chosen = self.rng.choice(len(self.training), size=min(self.options.batch, len(self.training)),
                                 replace=False)
        for index in chosen:
            feed = _augment(self.training[index], self.rng) if self.options.augment else self.training[index]
            outputs = self.graph(*self._tensors(feed), outputs=self.compared)
            (_relative_error(outputs, self.teach(feed)) / len(chosen)).backward()

    def held_out_sqnr(self) -> float:
        """The PyTorch graph's worst output SQNR on the held-out samples."""
        with torch.no_grad():
            results = [[value.numpy() for value in self.graph(*self._tensors(feed), outputs=self.compared)]
                       for feed in self.held_out]
        return _worst_sqnr_db(list(zip(self.references, results)))

    def held_out_in_onnxruntime(self, model: onnx.ModelProto) -> float:
        student = ir.from_proto(model)
        values = compared_values(student)
        session = session_with_outputs(student, [values[name] for name in self.floats], threads=self.options.threads)
        try:
            results = [[outputs[name] for name in self.compared]
                       for outputs in (session.run(feed, self.compared) for feed in self.held_out)]
        finally:
            session.close()
        return _worst_sqnr_db(list(zip(self.references, results)))

    def _tensors(self, feed: dict[str, np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(np.ascontiguousarray(feed[name])) for name in self.graph.input_names]

    def close(self) -> None:
        self.teacher.close()


def _one_sample_each(samples: Samples) -> list[dict[str, np.ndarray]]:
    if samples.per_sample:
        return list(samples.batches())
    feeds = []
    for batch in samples.batches():
        rows = len(next(iter(batch.values())))
        feeds += [{name: array[row:row + 1] for name, array in batch.items()} for row in range(rows)]
    return feeds

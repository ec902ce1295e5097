"""Language-model weights: eightbit's 4-bit and 8-bit blocks against ONNX Runtime's MatMulNBitsQuantizer and NNCF's
compress_weights, on a byte-level decoder with its KV cache and on the shipped digits transformer.

    python -m benchmarks.llm                        # writes its BENCHMARKS.md section
    python -m benchmarks.llm --models decoder --no-write

The decoder (scripts/train_decoder.py, BENCHMARK shape: 7.2 M parameters) is trained here on the standard
library's docstrings on first use and cached in benchmarks/.cache. Its task figure is perplexity per byte on
held-out docstrings (64 runs of 128 bytes, empty cache); its calibration samples are 64 runs of 128 training
bytes. Decode: one token at batch 1 with 127 cached places, ONNX Runtime on 2 threads, against fp32 in
alternating blocks (medians). The digits transformer: held-out accuracy (360 images), batch-1 speed.
All quantizers use blocks of 32; eightbit writes ONNX Runtime's MatMulNBits (--target ort).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from onnxruntime.quantization import quant_pre_process, quantize_dynamic

import eightbit
from benchmarks.dynamic import build_case
from benchmarks.models import CACHE
from benchmarks.sections import table_harness
from benchmarks.weight_quantizers import BLOCK, Convert, eightbit_blocks, nncf_weights, ort_nbits
from eightbit.backends import OrtSession
from eightbit.backends.peer import quantize_with_onnxruntime
from eightbit.datasets import input_specs, samples_from_arrays
from eightbit.ir import load_model
from eightbit.isa import cpu_features
from eightbit.measure.latency import interleaved
from eightbit.measure.metrics import Agreement

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_decoder as decoder  # noqa: E402  (a script, not a package)

MODELS = ["decoder", "digits_transformer"]
RUNS, LENGTH = 64, 128


def decoder_path() -> Path:
    """The benchmark decoder, trained and exported on first use (about 20 minutes on 2 cores)."""
    shape = decoder.BENCHMARK
    path = CACHE / f"decoder_w{shape.width}_l{shape.layers}_s{decoder.STEPS}.onnx"
    if not path.exists():
        import torch
        torch.set_num_threads(2)
        CACHE.mkdir(parents=True, exist_ok=True)
        text, _ = decoder.corpus()
        partial = path.with_suffix(".partial")
        decoder.export(decoder.train(shape, text, decoder.STEPS), partial)
        partial.replace(path)
    return path


@dataclasses.dataclass(frozen=True)
class Model:
    """A benchmark model: its file, calibration samples (input name -> rows), a model file's scores on the
    held-out samples, the task figure of those scores (perplexity, lower is better, or accuracy), and the
    one-call feed whose latency is timed."""

    name: str
    path: Path
    calibration: dict[str, np.ndarray]
    scores: Callable[[Path], np.ndarray]
    task: Callable[[np.ndarray], float]
    perplexity: bool
    timed: dict[str, np.ndarray]

    def figure(self, task: float) -> str:
        return f"{task:.3f}" if self.perplexity else f"{task:.2%}"

    def change(self, task: float, float_task: float) -> str:
        """Perplexity's change as a share of float's; accuracy's in points."""
        return f"{task / float_task - 1:+.2%}" if self.perplexity else f"{100 * (task - float_task):+.2f} points"


def _decoder() -> Model:
    shape = decoder.BENCHMARK
    text, held_out = decoder.corpus()
    path = decoder_path()

    def feed(tokens: np.ndarray, cache: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        return decoder.feeds(shape, tokens, cache)

    evaluation = decoder.windows(held_out, LENGTH, RUNS, 2)

    def scores(model: Path) -> np.ndarray:
        session = OrtSession(model)
        return np.concatenate([session.run(feed(evaluation[start:start + 16]))["logits"]
                               for start in range(0, RUNS, 16)])

    prompt = evaluation[:1, :LENGTH - 1]
    cache = list(OrtSession(path).run(feed(prompt)).values())[1:]
    return Model("decoder", path, feed(decoder.windows(text, LENGTH, RUNS, 1)), scores,
                 lambda logits: decoder.perplexity(logits, evaluation), True,
                 feed(evaluation[:1, LENGTH - 1:], cache))


def _digits(folder: Path) -> Model:
    case = build_case("digits_transformer", folder)

    def scores(model: Path) -> np.ndarray:
        return next(iter(OrtSession(model).run({case.input_name: case.evaluation}).values()))

    return Model("digits_transformer", case.path, {case.input_name: case.calibration}, scores,
                 lambda logits: float(np.mean(logits.argmax(-1) == case.labels)), False,
                 {case.input_name: case.evaluation[:1]})


def _eightbit_int8(scheme: str) -> Convert:
    def convert(model: Path, calibration: dict[str, np.ndarray], _prepared: Path, output: Path) -> None:
        eightbit.quantize(model, calibration, scheme=scheme, output=output)
    return convert


def _ort_static(model: Path, calibration: dict[str, np.ndarray], _prepared: Path, output: Path) -> None:
    quantize_with_onnxruntime(model, output, samples_from_arrays(calibration, input_specs(load_model(model))))


def _ort_dynamic(_model: Path, _calibration: dict[str, np.ndarray], prepared: Path, output: Path) -> None:
    quantize_dynamic(str(prepared), str(output))


VARIANTS: dict[str, Convert] = {
    "eightbit 4-bit (default codes)": eightbit_blocks(4, None),
    "eightbit 4-bit, nearest codes": eightbit_blocks(4, "nearest"),
    "eightbit 8-bit": eightbit_blocks(8, None),
    "ORT MatMulNBits 4-bit RTN": ort_nbits(4, "rtn"),
    "ORT MatMulNBits 4-bit HQQ": ort_nbits(4, "hqq"),
    "ORT MatMulNBits 8-bit RTN": ort_nbits(8, "rtn"),
    "NNCF int4_asym, data-free": nncf_weights("int4", False),
    "NNCF int4_asym, AWQ + scale estimation": nncf_weights("int4", True),
    "NNCF int8_asym (per channel)": nncf_weights("int8", False),
    "eightbit static int8 (default flags)": _eightbit_int8("eightbit"),
    "ORT quantize_static (QDQ, u8/s8 per channel)": _ort_static,
    "eightbit dynamic int8": _eightbit_int8("dynamic"),
    "ORT quantize_dynamic (defaults)": _ort_dynamic,
}


def _row(model: Model, label: str, convert: Convert, prepared: Path, output: Path, expected: np.ndarray) -> str:
    """The table's row of one quantizer, `expected` the float model's scores."""
    start = time.perf_counter()
    try:
        convert(model.path, model.calibration, prepared, output)
        seconds = time.perf_counter() - start
        scores = model.scores(output)
    except Exception as error:  # a peer that fails on a model is a figure too
        stage = "converting" if not output.exists() else "running its model"
        print(label, str(error)[-300:], flush=True)
        return f"| {model.name} | {label} | failed {stage}: {type(error).__name__} | | | | | |"
    float_session, session = OrtSession(model.path), OrtSession(output)
    latency = interleaved(lambda: float_session.run(model.timed), lambda: session.run(model.timed),
                          rounds=20, per_block=10)
    agreement = Agreement()
    agreement.add(expected.reshape(-1), scores.reshape(-1))
    task, float_task = model.task(scores), model.task(expected)
    size = output.stat().st_size / model.path.stat().st_size
    return (f"| {model.name} | {label} | {model.figure(task)} | {model.change(task, float_task)} | "
            f"{agreement.sqnr_db:.1f} | {latency.speedup:.2f}x | {size:.3f} | {seconds:.1f} |")


def run(names: list[str]) -> list[str]:
    rows = ["| model | quantizer | task | vs float | output SQNR dB | speed-up vs fp32 | size | convert s |",
            "|" + "---|" * 8]
    for name in names:
        with tempfile.TemporaryDirectory(prefix="eightbit-llm-") as scratch:
            folder = Path(scratch)
            model = _decoder() if name == "decoder" else _digits(folder)
            expected = model.scores(model.path)
            rows.append(f"| {model.name} | float | {model.figure(model.task(expected))} | | | 1.00x | 1.000 | |")
            prepared = folder / "float_preprocessed.onnx"
            quant_pre_process(str(model.path), str(prepared), skip_symbolic_shape=True)
            for label, convert in VARIANTS.items():
                rows.append(_row(model, label, convert, prepared, folder / f"{len(rows)}.onnx", expected))
                print(rows[-1], flush=True)
    return rows


SECTION = f"""## Language-model weights: 4-bit and 8-bit blocks on a decoder with its KV cache

`{{command}}` on {{cpu}}, ONNX Runtime on 2 threads.
Task: perplexity per byte on held-out docstrings for the decoder (lower is better; its change as a
share of float's), held-out accuracy for the digits transformer (360 images; one image is 0.28
points). Output SQNR: of the logits on the same held-out samples. Speed-up: the decoder's
one-token step at batch 1 with 127 cached places, the digits transformer at batch 1. Size:
quantized file / float file. Blocks of {BLOCK} for every 4-bit row and for eightbit's and ONNX
Runtime's 8-bit rows; NNCF's int8 is per channel. eightbit writes ONNX Runtime's MatMulNBits
(`--target ort`); its default codes are eq. 34's on the block grids where they give a layer's
output less error on the calibration samples, nearest otherwise (docs/quantization.md, section 2b).
The last four rows quantize activations too (int8 matrix products): eightbit's static scheme with
default flags and ONNX Runtime's `quantize_static` on the same calibration samples (the decoder's
with an empty cache), and both dynamic schemes.

{{table}}

The decoder is trained here for {decoder.STEPS} steps, about one pass over its text: a small model whose norms'
outputs have no channels far larger than the rest, so eightbit's activation-aware scales (eq. 39) rescale no
norm of it (none gains the 0.5 dB margin) and its 4-bit rows are eq. 34's codes alone. ONNX Runtime's
MatMulNBits quantizer writes accuracy level 0 unless asked (float arithmetic on dequantized weights), hence
its speed; eightbit writes level 4 (inputs to int8 per block). ONNX Runtime's `quantize_static` puts a u8
grid on the attention's masked scores, which the decoder (as exported transformers commonly do) fills with
float32's lowest value: the grid's step is then about 1.3e36, every score rounds to one code and attention
becomes uniform. The digits transformer's matrices (8 tokens of 128) are too small at batch 1 for integer
kernels to beat float, except the dynamic scheme's.
"""


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, MODELS, run, "llm", SECTION.replace("{cpu}", cpu_features().summary()))


if __name__ == "__main__":
    raise SystemExit(main())

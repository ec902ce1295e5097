"""Dynamic quantization: eightbit's `--scheme dynamic` vs ONNX Runtime's `quantize_dynamic`.

    python -m benchmarks.dynamic                       # writes its BENCHMARKS.md section
    python -m benchmarks.dynamic --models digits_lstm --no-write

Models: the shipped digits transformer and digits LSTM (scripts/train_digits_sequence.py; held-out
accuracy on 360 images) and PP-OCRv4 rec from the pinned rapidocr wheel (a real SVTR text
recognizer: convolutions, attention, a 6,625-class CTC head), on rendered text lines; its task
figure is the share of lines whose greedy CTC decoding equals the float model's; and a token encoder built
here in PyTorch (a 30,522 x 256 token table, two encoder layers, random weights: output SQNR only), where
the embedding table is most of the file.

eightbit gets 64 calibration samples (only to decide whether the attention's activation x
activation MatMuls are quantized); the peers need none and are given the model after their own
recommended pre-processing (`quant_pre_process` without its symbolic shape inference, which fails on PP-OCRv4 rec:
ONNX shape inference and graph optimization, which makes constants initializers). Peers: `quantize_dynamic` with its
defaults (s8 weights per tensor), and with u8 weights. Speed: batch 1, 2 threads, each model
against fp32 in alternating blocks in this process (medians).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

import eightbit
from benchmarks.images import rendered_text_images
from benchmarks.models import rapidocr_model
from benchmarks.run import Case
from benchmarks.sections import table_harness
from eightbit.backends import OrtSession
from eightbit.backends.onnxruntime import session_with_outputs
from eightbit.demo import shipped_digits
from eightbit.ir import load_model
from eightbit.isa import cpu_features
from eightbit.measure.latency import interleaved
from eightbit.measure.metrics import Agreement, compared_values

DATA = Path(eightbit.__file__).parent / "data"
MODELS = ["digits_transformer", "digits_lstm", "ppocr_rec", "token_encoder"]
CALIBRATION = 64
TEXT_LINES = 32
# The token encoder: a sentence encoder's shape with random weights (torch's initialization, seed 0): a
# VOCABULARY x WIDTH token table and a position table, two encoder layers, mean over SEQUENCE tokens.
VOCABULARY, WIDTH, SEQUENCE = 30522, 256, 32


def _token_encoder(folder: Path) -> Path:
    """The token encoder exported to ONNX (opset 17) in `folder`."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(VOCABULARY, WIDTH)
            self.positions = nn.Embedding(SEQUENCE, WIDTH)
            layer = nn.TransformerEncoderLayer(WIDTH, 4, 4 * WIDTH, dropout=0.0, batch_first=True)
            self.layers = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            for weight in self.layers.parameters():  # the layers start as copies of one
                if weight.dim() > 1:
                    nn.init.xavier_uniform_(weight)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))
            return self.layers(x).mean(dim=1)

    torch.manual_seed(0)
    torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder-layer op has no ONNX export
    path = folder / "token_encoder.onnx"
    with torch.no_grad():
        torch.onnx.export(Encoder().eval(), (torch.zeros(1, SEQUENCE, dtype=torch.int64),), path,
                          input_names=["ids"], output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"ids": {0: "batch"}, "embedding": {0: "batch"}})
    return path


def build_case(name: str, folder: Path | None = None) -> Case:
    """The case `name`; `folder` holds a model built here (the token encoder)."""
    if name == "token_encoder" and folder is not None:
        ids = np.random.default_rng(0).integers(0, VOCABULARY, (CALIBRATION + TEXT_LINES, SEQUENCE))
        return Case(name, _token_encoder(folder), "ids", ids[:CALIBRATION], ids[CALIBRATION:], "sqnr")
    if name.startswith("digits_"):
        digits = shipped_digits()
        return Case(name, DATA / f"{name}.onnx", "rows", digits.x_train[:CALIBRATION, 0], digits.x_test[:, 0],
                    "accuracy", digits.y_test)
    if name == "ppocr_rec":
        lines = rendered_text_images(CALIBRATION + TEXT_LINES, 48, 320, seed=2)
        return Case(name, rapidocr_model(name), "x", lines[:CALIBRATION], lines[CALIBRATION:], "text")
    raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def ctc_greedy(scores: np.ndarray) -> list[tuple[int, ...]]:
    """Class sequences of [batch, steps, classes] scores: best class per step, repeats merged, blanks (0) dropped."""
    decoded = []
    for best in scores.argmax(-1):
        merged = [int(c) for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]
        decoded.append(tuple(merged))
    return decoded


def _scores(path: Path, case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(output, the value compared: the output or the input of its softmax) on the evaluation batch."""
    model = load_model(path)
    output = model.graph.outputs[0].name
    compared = compared_values(model)[output]
    session = session_with_outputs(model, [model.graph.outputs[0], compared])
    result = session.run({case.input_name: case.evaluation}, [output, compared.name])
    return result[output], result[compared.name]


def measure(case: Case, float_path: Path, quantized: Path) -> dict[str, str]:
    expected_out, expected = _scores(float_path, case)
    got_out, got = _scores(quantized, case)
    agreement = Agreement()
    agreement.add(expected.reshape(-1), got.reshape(-1))
    if case.labels is not None:
        same = np.mean(got_out.argmax(-1) == expected_out.argmax(-1))
        task = f"{np.mean(got_out.argmax(-1) == case.labels):.2%} ({same:.1%} same class)"
    elif case.metric == "text":
        same = np.mean([a == b for a, b in zip(ctc_greedy(expected_out), ctc_greedy(got_out))])
        task = f"{same:.0%} same text"
    else:  # no task to agree on
        task = "-"
    single = {case.input_name: case.evaluation[:1]}
    float_session, quantized_session = OrtSession(float_path), OrtSession(quantized)
    latency = interleaved(lambda: float_session.run(single), lambda: quantized_session.run(single),
                          rounds=12, per_block=5)
    size = quantized.stat().st_size / float_path.stat().st_size
    return {"sqnr": f"{agreement.sqnr_db:.1f}", "task": task, "speedup": f"{latency.speedup:.2f}x",
            "size": f"{size:.3f}"}


def run(names: list[str]) -> list[str]:
    rows = ["| model | float | quantizer | output SQNR dB | task | speed-up vs fp32 | size |", "|" + "---|" * 7]
    for name in names:
        with tempfile.TemporaryDirectory(prefix="eightbit-dynamic-") as scratch:
            folder = Path(scratch)
            case = build_case(name, folder)
            ours = folder / "eightbit.onnx"
            eightbit.quantize(case.path, {case.input_name: case.calibration}, scheme="dynamic", output=ours)
            variants = {"eightbit dynamic": ours}
            prepared = folder / "float_preprocessed.onnx"  # the peer's recommended first step (weights as initializers)
            quant_pre_process(str(case.path), str(prepared), skip_symbolic_shape=True)
            for label, weight_type in (("ORT quantize_dynamic (defaults: s8)", QuantType.QInt8),
                                       ("ORT quantize_dynamic, u8 weights", QuantType.QUInt8)):
                target = folder / f"ort_{weight_type.name}.onnx"
                quantize_dynamic(str(prepared), str(target), weight_type=weight_type)
                variants[label] = target
            float_task = ""
            if case.labels is not None:
                float_out, _ = _scores(case.path, case)
                float_task = f"{np.mean(float_out.argmax(-1) == case.labels):.2%}"
            for label, path in variants.items():
                figures = measure(case, case.path, path)
                rows.append(f"| {name} | {float_task} | {label} | {figures['sqnr']} | {figures['task']} | "
                            f"{figures['speedup']} | {figures['size']} |")
                print(rows[-1], flush=True)
    return rows


SECTION = f"""## Dynamic quantization (transformer, LSTM, PP-OCRv4 rec, token encoder)

`{{command}}` on {cpu_features().summary()}, ONNX Runtime on 2 threads.
Output SQNR is measured before the softmax where the output is one (PP-OCRv4 rec). Task: held-out
accuracy for the digits models (360 images; in brackets the share classified as the float model
does), share of {TEXT_LINES} rendered text lines decoded (greedy CTC) to the same text as the float
model for PP-OCRv4 rec. The token encoder (random weights, {VOCABULARY:,} x {WIDTH} token table, {SEQUENCE}
random tokens a sample) has no task figure. Speed-up: batch 1. Size: quantized file / float file.

{{table}}
"""


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, MODELS, run, "dynamic", SECTION)


if __name__ == "__main__":
    raise SystemExit(main())

"""Weights in blocks: eightbit's `--scheme weights --weight-bits 4` (and 8) vs ONNX Runtime's MatMulNBitsQuantizer
and NNCF's compress_weights, all with blocks of 32.

    python -m benchmarks.blocks                        # writes its BENCHMARKS.md section
    python -m benchmarks.blocks --models digits_transformer --no-write

Models and task figures as in benchmarks/dynamic.py: the shipped digits transformer (held-out accuracy on 360
images), PP-OCRv4 rec (share of rendered text lines whose greedy CTC decoding equals the float model's) and the
token encoder (random weights, a 30,522 x 256 token table: output SQNR only); and a synthetic stack of six
2048 x 2048 MatMuls with random weights (96 MiB), the shape of a language model's decode step, for speed at
batch 1 (its SQNR, on random weights and inputs, says little about real models).
eightbit and the data-aware peer methods get the same 64 calibration samples. The peers are given the model after
ONNX Runtime's `quant_pre_process` (weights held in Constant nodes become initializers, which they need). Speed:
batch 1, 2 threads, each model against fp32 in alternating blocks in this process (medians). Time: seconds to
convert, in this process, one after the other.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import quant_pre_process

from benchmarks.dynamic import _scores, build_case, measure
from benchmarks.run import Case
from benchmarks.sections import table_harness
from benchmarks.weight_quantizers import BLOCK, Convert, eightbit_blocks, nncf_weights, ort_nbits
from eightbit.isa import cpu_features

MODELS = ["digits_transformer", "ppocr_rec", "token_encoder", "matmul_stack"]
# The synthetic stack: LAYERS square MatMuls of WIDTH with Relu between, random weights (1/sqrt(WIDTH)), one row
# in: the shape of a language model's decode step, where batch-1 time is reading the weights.
WIDTH, LAYERS = 2048, 6
# The mixed row's limit: between the 4-bit and 8-bit figures of most of these models.
MIXED_DB = 35.0


def _stack(folder: Path) -> Case:
    rng = np.random.default_rng(0)
    nodes, weights = [], []
    for layer in range(LAYERS):
        weights.append(onnx.numpy_helper.from_array(
            (rng.normal(0, 1, (WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32), f"w{layer}"))
        nodes.append(onnx.helper.make_node("MatMul", [f"h{layer}", f"w{layer}"], [f"m{layer}"]))
        nodes.append(onnx.helper.make_node("Relu", [f"m{layer}"], [f"h{layer + 1}"]))
    nodes[-1] = onnx.helper.make_node("Identity", [f"m{LAYERS - 1}"], [f"h{LAYERS}"])
    graph = onnx.helper.make_graph(nodes, "stack", [onnx.helper.make_tensor_value_info("h0", 1, ["batch", WIDTH])],
                                   [onnx.helper.make_tensor_value_info(f"h{LAYERS}", 1, ["batch", WIDTH])], weights)
    path = folder / "matmul_stack.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    data = rng.normal(0, 1, (96, WIDTH)).astype(np.float32)
    return Case("matmul_stack", path, "h0", data[:64], data[64:], "sqnr")


VARIANTS: dict[str, Convert] = {
    "eightbit 4-bit (default codes)": eightbit_blocks(4, None),
    "eightbit 4-bit, nearest codes": eightbit_blocks(4, "nearest"),
    "eightbit 8-bit": eightbit_blocks(8, None),
    f"eightbit 4/8-bit, --min-sqnr {MIXED_DB:g}": eightbit_blocks(4, None, MIXED_DB),
    "ORT MatMulNBits RTN": ort_nbits(4, "rtn"),
    "ORT MatMulNBits HQQ": ort_nbits(4, "hqq"),
    "NNCF int4_asym, data-free": nncf_weights("int4", False),
    "NNCF int4_asym, AWQ + scale estimation": nncf_weights("int4", True),
}


def run(names: list[str]) -> list[str]:
    rows = ["| model | float | quantizer | output SQNR dB | task | speed-up vs fp32 | size | convert s |",
            "|" + "---|" * 8]
    for name in names:
        with tempfile.TemporaryDirectory(prefix="eightbit-blocks-") as scratch:
            folder = Path(scratch)
            case = _stack(folder) if name == "matmul_stack" else build_case(name, folder)
            float_task = ""
            if case.labels is not None:
                float_out, _ = _scores(case.path, case)
                float_task = f"{np.mean(float_out.argmax(-1) == case.labels):.2%}"
            prepared = folder / "float_preprocessed.onnx"
            quant_pre_process(str(case.path), str(prepared), skip_symbolic_shape=True)
            for label, convert in VARIANTS.items():
                output = folder / f"{len(rows)}.onnx"
                start = time.perf_counter()
                try:
                    convert(case.path, {case.input_name: case.calibration}, prepared, output)
                    seconds = time.perf_counter() - start
                    figures = measure(case, case.path, output)
                except Exception as error:  # a peer that fails on a model is a figure too
                    stage = "converting" if not output.exists() else "running its model"
                    rows.append(f"| {name} | {float_task} | {label} | failed {stage}: {type(error).__name__} "
                                "| | | | |")
                    print(rows[-1], str(error)[-300:], flush=True)
                    continue
                rows.append(f"| {name} | {float_task} | {label} | {figures['sqnr']} | {figures['task']} | "
                            f"{figures['speedup']} | {figures['size']} | {seconds:.1f} |")
                print(rows[-1], flush=True)
    return rows


SECTION = f"""## Weights in blocks (4-bit and 8-bit, blocks of {BLOCK})

`{{command}}` on {cpu_features().summary()}, ONNX Runtime on 2 threads.
Output SQNR is measured before the softmax where the output is one (PP-OCRv4 rec). Task: held-out
accuracy for the digits transformer (360 images; in brackets the share classified as the float model
does), share of rendered text lines decoded (greedy CTC) to the same text as the float model for
PP-OCRv4 rec. Speed-up: batch 1. Size: quantized file / float file. eightbit writes ONNX Runtime's
MatMulNBits / GatherBlockQuantized here (`--target ort`); its default codes are eq. 34's on the block
grids where they give a layer's output less error on the calibration samples, nearest otherwise
(docs/quantization.md, section 2b). The 4/8-bit row gives the fewest weights 8-bit blocks until the
worst output SQNR on the calibration samples reaches {MIXED_DB:g} dB (all of them where that falls short).

{{table}}

eightbit's weights scheme also stores convolutions (PP-OCRv4 rec has 38) as 8-bit per-channel
codes, which the peers leave float: hence its size there, 0.236 against 0.686, and most of its
nearest-code error (the same model with 8-bit per-channel weights everywhere, nearest codes,
measures 16.4 dB). NNCF takes 4-bit groups only in opset-21 models and refuses weights narrower
than a group: it is given the model upgraded to opset 21 and its own option to shrink such groups
(to 16 at least). On PP-OCRv4 rec and the token encoder the models it writes do not run in ONNX
Runtime (a per-axis DequantizeLinear whose scale is not 1-D on a fused convolution; a block
DequantizeLinear whose scale has the wrong length). On the token encoder eightbit stores the token
table as 8-bit codes (size 0.240), which ORT's quantizer leaves float (0.871); with the table in
4-bit blocks too it measured 24.7 dB at 0.162. The digits transformer's and token encoder's
matrices (128 and 256 wide) are too small for the block kernels to gain much over float at batch
1, where they gain at all; the 96 MiB stack is the decode-step case. The 4/8-bit row's limit holds
on the calibration samples, which are also those H comes from: on the held-out samples the token
encoder measures 32.6 dB and the stack 23.7 dB (64 samples for 2,048 inputs give H of rank 64, so
eq. 34's codes and the ranking fit those samples far better than others; nearest codes there: 14.4
dB at 4 bits).
"""


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, MODELS, run, "blocks", SECTION)


if __name__ == "__main__":
    raise SystemExit(main())

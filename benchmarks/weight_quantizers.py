"""The weight quantizers benchmarks/blocks.py and benchmarks/llm.py set side by side, all with blocks of BLOCK.

Each is a function (float model, calibration samples as input name -> rows, the model after ONNX Runtime's
`quant_pre_process`, output path) that writes its quantized model. The peers are given the pre-processed
model (weights held in Constant nodes become initializers, which they need).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter

import eightbit

BLOCK = 32
Convert = Callable[[Path, dict[str, np.ndarray], Path, Path], None]


def eightbit_blocks(bits: int, rounding: str | None, min_sqnr: float | None = None) -> Convert:
    """eightbit's weights scheme in `bits`-bit blocks, its codes `rounding` (None: the default)."""
    def convert(model: Path, calibration: dict[str, np.ndarray], _prepared: Path, output: Path) -> None:
        eightbit.quantize(model, calibration, scheme="weights", weight_bits=bits, block_size=BLOCK,
                          weight_rounding=rounding, min_sqnr=min_sqnr, output=output)
    return convert


def ort_nbits(bits: int, method: str) -> Convert:
    """ONNX Runtime's MatMulNBitsQuantizer, asymmetric, `method` "rtn" or "hqq", its other options as it sets
    them (accuracy level 0)."""
    def convert(_model: Path, _calibration: dict[str, np.ndarray], prepared: Path, output: Path) -> None:
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits
        config = (nbits.HQQWeightOnlyQuantConfig(block_size=BLOCK, bits=bits) if method == "hqq" else
                  nbits.DefaultWeightOnlyQuantConfig(block_size=BLOCK, is_symmetric=False, bits=bits))
        quantizer = nbits.MatMulNBitsQuantizer(onnx.load(prepared), bits=bits, block_size=BLOCK, is_symmetric=False,
                                               algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(output), False)
    return convert


def nncf_weights(mode: str, data_aware: bool) -> Convert:
    """NNCF's compress_weights, `mode` "int4" (asymmetric groups of BLOCK) or "int8" (asymmetric, per channel);
    with `data_aware`, AWQ and scale estimation on every calibration sample. NNCF takes 4-bit groups only in
    opset-21 models and refuses weights narrower than a group: it is given the model upgraded to opset 21 and
    its own option to shrink such groups (to 16 at least)."""
    def convert(_model: Path, calibration: dict[str, np.ndarray], prepared: Path, output: Path) -> None:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode
        options: dict[str, object] = {}
        if data_aware:
            count = len(next(iter(calibration.values())))
            samples = [{name: rows[index:index + 1] for name, rows in calibration.items()} for index in range(count)]
            options = {"dataset": nncf.Dataset(samples), "awq": True, "scale_estimation": True}
        if mode == "int4":
            options.update(group_size=BLOCK, ratio=1.0, advanced_parameters=AdvancedCompressionParameters(
                group_size_fallback_mode=GroupSizeFallbackMode.ADJUST, min_adjusted_group_size=16))
        compress = nncf.CompressWeightsMode.INT4_ASYM if mode == "int4" else nncf.CompressWeightsMode.INT8_ASYM
        source = onnx.version_converter.convert_version(onnx.load(prepared), 21)
        onnx.save(nncf.compress_weights(source, mode=compress, **options), output)
    return convert

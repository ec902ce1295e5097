"""export(): a prepared, trained model as QDQ ONNX carrying its learned grids."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.fx as fx

from eightbit.ir.save import check_output_path, write_atomically
from eightbit.qat.modules import QuantizedWeights

# Per-axis DequantizeLinear needs 13; HardSwish 14.
EXPORT_OPSET = 17


def export(model: fx.GraphModule, path: str | os.PathLike, *, input_names: Sequence[str] | None = None,
           output_names: Sequence[str] | None = None, dynamic_batch: bool = True) -> Path:
    """Write `model` (from qat.prepare, trained) as ONNX: weights as integer codes + DequantizeLinear,
    each activation grid as a QuantizeLinear -> DequantizeLinear pair, biases float. `eightbit
    quantize` turns it into the integer model on exactly these grids, with no calibration.
    """
    path = check_output_path(path)
    copied = copy.deepcopy(model).eval()
    for module in copied.modules():
        if isinstance(module, QuantizedWeights):
            module.prepare_export()
    inputs = tuple(model.example_inputs)
    input_names = list(input_names or [n.name for n in model.graph.nodes if n.op == "placeholder"])
    outputs = copied(*inputs)
    count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    output_names = list(output_names or (["output"] if count == 1 else [f"output_{i}" for i in range(count)]))
    dynamic_axes = {name: {0: "batch"} for name in input_names + output_names} if dynamic_batch else None

    def write(temporary: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's notices; the model is checked on load
            torch.onnx.export(copied, inputs, temporary, dynamo=False, opset_version=EXPORT_OPSET,
                              input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                              do_constant_folding=False)

    return write_atomically(path, write, suffix=".onnx.tmp")

"""export(): a prepared, trained model as QDQ ONNX carrying its learned grids."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.fx as fx

from eightbit.frontends.pytorch import quiet_exporter
from eightbit.ir.save import check_output_path, write_atomically
from eightbit.qat.modules import QuantizedWeights
from eightbit.qat.quantizers import ActivationQuantizer

# Per-axis DequantizeLinear needs 13; HardSwish 14; 18: the exporter's own opset at torch 2.13.
EXPORT_OPSET = 18


def export(model: fx.GraphModule, path: str | os.PathLike, *, input_names: Sequence[str] | None = None,
           output_names: Sequence[str] | None = None, dynamic_batch: bool = True) -> Path:
    """Write `model` (from qat.prepare, trained) as ONNX: weights as integer codes + DequantizeLinear,
    each activation grid as a QuantizeLinear -> DequantizeLinear pair, biases float. `eightbit
    quantize` turns it into the integer model on exactly these grids, with no calibration.
    """
    path = check_output_path(path)
    copied = copy.deepcopy(model).eval()
    for module in copied.modules():
        if isinstance(module, (QuantizedWeights, ActivationQuantizer)):
            module.prepare_export()
    inputs = tuple(model.example_inputs)
    input_names = list(input_names or [n.name for n in model.graph.nodes if n.op == "placeholder"])
    with torch.no_grad():
        outputs = copied(*inputs)
    count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    output_names = list(output_names or (["output"] if count == 1 else [f"output_{i}" for i in range(count)]))
    dynamic = tuple({0: torch.export.Dim.AUTO} for _ in inputs) if dynamic_batch else None
    with quiet_exporter():
        program = torch.onnx.export(copied, inputs, dynamo=True, opset_version=EXPORT_OPSET, input_names=input_names,
                                    output_names=output_names, dynamic_shapes=dynamic, verbose=False)
    return write_atomically(path, lambda temporary: program.save(str(temporary)), suffix=".onnx.tmp")

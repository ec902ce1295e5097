"""`eightbit export-int`: a quantized model as the integer program the reference runs (docs, section 10).

What a hardware team feeds its own engine: every integer step with its integer weights, biases,
zero points, multipliers and shifts (for power-of-two models, the plain right shift), the order
of the steps and the tensors they connect; the float steps at the edges (quantizing the input,
dequantizing the output, ops with no integer kernel) are listed with their scales.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import onnx_ir as ir

from eightbit.backends.integer_ops import IntegerStep, Quantized
from eightbit.backends.reference import DequantizeStep, FloatStep, QuantizeStep, ReferenceSession
from eightbit.errors import InputError
from eightbit.ir import write_atomically
from eightbit.kernels.requantize import Requantization

FORMAT_VERSION = 1
EXTENSIONS = (".npz", ".json")


def _plain(value, arrays: dict[str, np.ndarray], key: str):
    """A JSON-able form of a step parameter; arrays are stored apart under `key`."""
    if isinstance(value, np.ndarray) and value.ndim > 0:
        arrays[key] = value
        return {"array": key, "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, (np.integer, np.ndarray)):
        return int(value)
    if isinstance(value, Requantization):
        fields = {f.name: _plain(getattr(value, f.name), arrays, f"{key}.{f.name}") for f in dataclasses.fields(value)}
        if np.all(value.multiplier == 2**30):
            # M = 2^30 * 2^(left - 31 - right): a rounding right shift by right + 1 - left (eq. 9-11).
            fields["rounding_right_shift"] = _plain(value.right_shift + 1 - value.left_shift, arrays,
                                                    f"{key}.rounding_right_shift")
        return fields
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name), arrays, f"{key}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v, arrays, f"{key}.{i}") for i, v in enumerate(value)]
    return value


def _grid(q: Quantized) -> dict:
    return {"codes": q.name, "dtype": str(q.fmt.numpy_dtype), "scale": q.scale.astype(float).tolist(),
            "zero_point": q.zero_point.astype(int).tolist(), "axis": q.axis}


def integer_program(model: ir.Model) -> tuple[dict, dict[str, np.ndarray]]:
    """(description, arrays): the steps of `model` as the reference backend runs them."""
    session = ReferenceSession(model)
    arrays: dict[str, np.ndarray] = {}
    steps = []
    for index, step in enumerate(session.steps):
        key = f"step{index}"
        if isinstance(step, IntegerStep):
            steps.append({"kind": "integer", "op_type": step.op_type, "node": step.node, "inputs": step.inputs,
                          "output": step.output, "output_dtype": str(np.dtype(step.dtype)),
                          "kernel": f"{step.compute.func.__module__}.{step.compute.func.__qualname__}",
                          "accumulator_bound": step.accumulator_bound,
                          "params": {name: _plain(value, arrays, f"{key}.{name}")
                                     for name, value in step.compute.keywords.items()}})
        elif isinstance(step, QuantizeStep):
            steps.append({"kind": "quantize", "input": step.source, "output": _grid(step.output)})
        elif isinstance(step, DequantizeStep):
            steps.append({"kind": "dequantize", "input": _grid(step.source), "output": step.output})
        elif isinstance(step, FloatStep):
            steps.append({"kind": "float", "op_type": step.node.op_type, "node": step.node.name,
                          "inputs": [v.name if v is not None else "" for v in step.node.inputs],
                          "outputs": [v.name for v in step.node.outputs]})
    description = {
        "format": "eightbit integer program", "version": FORMAT_VERSION,
        "inputs": session.input_names, "outputs": session.output_names,
        "scheme": model.metadata_props.get("eightbit.scheme"), "bias": json.loads(model.metadata_props.get(
            "eightbit.bias", "null")),
        "steps": steps,
    }
    return description, arrays


def _jsonable(description: dict, arrays: dict[str, np.ndarray]) -> dict:
    """The description with every array reference replaced by the array's values."""
    def expand(node):
        if isinstance(node, dict):
            if set(node) == {"array", "dtype", "shape"}:
                return arrays[node["array"]].tolist()
            return {k: expand(v) for k, v in node.items()}
        if isinstance(node, list):
            return [expand(v) for v in node]
        return node
    return expand(description)


def export_int(model: ir.Model, output: str | os.PathLike) -> dict:
    """Write the integer program of `model` to `output` (.npz: arrays + "program" JSON; .json: all in one)."""
    output = Path(output)
    if output.suffix not in EXTENSIONS:
        raise InputError(f"cannot write {output.name}: name the output .npz or .json")
    description, arrays = integer_program(model)
    if not any(step["kind"] == "integer" for step in description["steps"]):
        raise InputError("the model has no integer steps (no DequantizeLinear -> op -> QuantizeLinear group): "
                         "export-int reads QDQ models such as eightbit quantize writes; quantize it first")
    if output.suffix == ".json":
        payload = json.dumps(_jsonable(description, arrays), indent=1).encode()
    else:
        buffer = io.BytesIO()
        np.savez(buffer, program=np.frombuffer(json.dumps(description).encode(), dtype=np.uint8), **arrays)
        payload = buffer.getvalue()
    write_atomically(output, lambda temporary: temporary.write_bytes(payload))
    return description


def read_program(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read an .npz written by export_int back: (description, arrays)."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "program"}
        description = json.loads(archive["program"].tobytes().decode())
    return description, arrays

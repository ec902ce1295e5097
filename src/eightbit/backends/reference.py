"""The integer reference backend: runs a QDQ model the way docs/quantization.md says it computes.

Every `DequantizeLinear -> op -> QuantizeLinear` group whose op has a kernel becomes one integer
step (backends/integer_ops.py prepares its integer parameters once, here, when the session is
made). What is left runs in float exactly as the ONNX graph says: QuantizeLinear of float
tensors (graph inputs, outputs of float ops), DequantizeLinear feeding float ops or graph
outputs, and the float ops themselves (through the ONNX reference evaluator).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import onnx_ir as ir

from eightbit.backends.integer_ops import DATA_INPUTS, LOWERINGS, Group, IntegerStep, Quantized
from eightbit.config import integer_format
from eightbit.errors import InputError
from eightbit.ir import as_model
from eightbit.ir.evaluate import evaluate_node
from eightbit.ir.graph import constant_array, qdq_parameters
from eightbit.kernels.blocks import gather_block_quantized, matmul_nbits
from eightbit.kernels.dynamic_lstm import dynamic_lstm
from eightbit.quant import dequantize, quantize


@dataclasses.dataclass
class QuantizeStep:
    """Float -> codes at a graph boundary (eq. 5)."""

    source: str
    output: Quantized

    def run(self, env: dict[str, np.ndarray]) -> np.ndarray:
        out = self.output
        return quantize(env[self.source], out.scale, out.zero_point, out.fmt, out.channel_axis)


@dataclasses.dataclass
class DequantizeStep:
    """Codes -> float for a float op or a graph output (eq. 1)."""

    source: Quantized
    output: str

    def run(self, env: dict[str, np.ndarray]) -> np.ndarray:
        q = self.source
        return dequantize(env[q.name], q.scale, q.zero_point, q.channel_axis)


@dataclasses.dataclass
class FloatStep:
    """An op with no integer kernel here, evaluated as the ONNX spec defines it."""

    node: ir.Node
    opset: int

    def run(self, env: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = [env[v.name] if v is not None and v.name else None for v in self.node.inputs]
        return evaluate_node(self.node, inputs, self.opset)


@dataclasses.dataclass
class DynamicLSTMStep:
    """The dynamic scheme's integer LSTM (com.microsoft DynamicQuantizeLSTM, kernels/dynamic_lstm.py)."""

    node: ir.Node

    def run(self, env: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = [env[v.name] if v is not None and v.name else None for v in self.node.inputs]
        inputs += [None] * (12 - len(inputs))
        x, w, r, bias, lengths, initial_h, initial_c, peepholes, w_scale, w_zero, r_scale, r_zero = inputs
        if lengths is not None and np.any(lengths != x.shape[0]):
            raise InputError(f"{self.node.name}: sequence lengths shorter than the input are not supported by the "
                             "reference LSTM; run with --backend ort")
        attributes = {name: attr.value for name, attr in self.node.attributes.items()}
        return list(dynamic_lstm(
            x, w, r, bias, initial_h, initial_c, peepholes, w_scale, w_zero, r_scale, r_zero,
            hidden_size=int(attributes["hidden_size"]), direction=attributes.get("direction", "forward"),
            activations=attributes.get("activations"), clip=attributes.get("clip"),
            input_forget=int(attributes.get("input_forget", 0)),
        ))


@dataclasses.dataclass
class BlockStep:
    """ONNX Runtime's block operators (com.microsoft MatMulNBits, GatherBlockQuantized; kernels/blocks.py)."""

    node: ir.Node

    def run(self, env: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = [env[v.name] if v is not None and v.name else None for v in self.node.inputs]
        inputs += [None] * (6 - len(inputs))
        attributes = {name: attr.value for name, attr in self.node.attributes.items()}
        if self.node.op_type == "MatMulNBits":
            a, b, scales, zero_points, _, bias = inputs
            return [matmul_nbits(a, b, scales, zero_points, bias, k=attributes["K"], n=attributes["N"],
                                 bits=attributes.get("bits", 4), block_size=attributes["block_size"])]
        data, indices, scales, zero_points = inputs[:4]
        return [gather_block_quantized(data, indices, scales, zero_points,
                                       block_size=attributes.get("block_size", 128), bits=attributes.get("bits", 4))]


def _block_step(node: ir.Node) -> BlockStep:
    """The step of a com.microsoft block operator, or InputError for a form kernels/blocks.py does not take."""
    attributes = {name: attr.value for name, attr in node.attributes.items()}
    if node.op_type == "GatherBlockQuantized":
        data = node.inputs[0]
        rank = data.shape.rank() if data.shape is not None else 2
        if data.dtype != ir.DataType.UINT8 or attributes.get("gather_axis", 0) != 0 or rank != 2 \
                or attributes.get("quantize_axis", 1) not in (1, -1):
            raise InputError(f"{node.name}: the reference kernels take GatherBlockQuantized with a 2-D uint8 table "
                             "gathered on axis 0 and blocked on axis 1 only; run with --backend ort")
    return BlockStep(node)


def quantized_grid(node: ir.Node, codes_name: str) -> Quantized | None:
    """The grid of a QuantizeLinear / DequantizeLinear node (constant scale and zero point only)."""
    parameters = qdq_parameters(node)
    if parameters is None:
        return None
    scale, zero, axis = parameters
    try:
        fmt = integer_format(zero.dtype)
    except ValueError:
        return None
    return Quantized(codes_name, scale, zero, axis, fmt)


def dequantized_source(value: ir.Value | None) -> tuple[Quantized, np.ndarray | None] | None:
    """(grid, constant codes or None) of a value a DequantizeLinear produces, else None."""
    producer = value.producer() if value is not None else None
    if producer is None or producer.op_type != "DequantizeLinear":
        return None
    source = producer.inputs[0]
    grid = quantized_grid(producer, source.name)
    if grid is None:
        return None
    return grid, constant_array(source)


class ReferenceSession:
    """Runs a model (float or quantized) with the integer reference kernels; the same API as OrtSession."""

    def __init__(self, model: ir.Model | str | os.PathLike) -> None:
        self.model = as_model(model)
        graph = self.model.graph
        self.opset = self.model.opset_imports.get("", 13)
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self.constants: dict[str, np.ndarray] = {}
        for value in graph.initializers.values():
            if value.const_value is not None:
                self.constants[value.name] = value.const_value.numpy()
        self.steps = self._lower(graph)

    # -- offline -----------------------------------------------------------------------------

    def _group(self, node: ir.Node) -> Group | None:
        if len(node.outputs) < 1 or node.outputs[0].is_graph_output():
            return None
        uses = node.outputs[0].uses()
        if len(uses) != 1 or uses[0].node.op_type != "QuantizeLinear" or uses[0].idx != 0:
            return None
        if any(out.uses() for out in node.outputs[1:]):
            return None
        q_node = uses[0].node
        output = quantized_grid(q_node, q_node.outputs[0].name)
        if output is None or not output.per_tensor:
            return None
        data = DATA_INPUTS.get(node.op_type, (0,))
        indices = range(len(node.inputs)) if data is None else [i for i in data if i < len(node.inputs)]
        inputs: list[Quantized | None] = [None] * len(node.inputs)
        codes: dict[int, np.ndarray] = {}
        for i in indices:
            value = node.inputs[i]
            if value is None:
                continue
            found = dequantized_source(value)
            if found is None:
                if i == 2 and node.op_type in ("Conv", "ConvTranspose", "Gemm") and constant_array(value) is not None:
                    continue  # a float bias: quantized when the group is lowered
                return None
            inputs[i], constant = found
            if constant is not None:
                codes[i] = constant
        return Group(node, inputs, codes, output)

    def _lower(self, graph: ir.Graph) -> list:
        integer: dict[ir.Node, IntegerStep] = {}
        for node in graph:
            lowering = LOWERINGS.get(node.op_type)
            group = self._group(node) if lowering is not None else None
            step = lowering(group) if group is not None else None
            if step is not None:
                integer[node] = step
        consumed_q = {node.outputs[0].uses()[0].node for node in integer}
        steps: list = []
        for node in graph:
            if node in integer:
                steps.append(integer[node])
            elif node.op_type == "QuantizeLinear" and node not in consumed_q:
                grid = quantized_grid(node, node.outputs[0].name)
                steps.append(QuantizeStep(node.inputs[0].name, grid) if grid is not None else
                             FloatStep(node, self.opset))
            elif node.op_type == "DequantizeLinear":
                output = node.outputs[0]
                needed = output.is_graph_output() or any(use.node not in integer for use in output.uses())
                if needed:
                    grid = quantized_grid(node, node.inputs[0].name)
                    steps.append(DequantizeStep(grid, output.name) if grid is not None else
                                 FloatStep(node, self.opset))
            elif node.op_type == "DynamicQuantizeLSTM" and node.domain == "com.microsoft":
                steps.append(DynamicLSTMStep(node))
            elif node.op_type in ("MatMulNBits", "GatherBlockQuantized") and node.domain == "com.microsoft":
                steps.append(_block_step(node))
            elif node.domain not in ("", "ai.onnx"):
                raise InputError(f"{node.name}: the reference kernels have no {node.domain}.{node.op_type}; run with "
                                 "--backend ort")
            elif node.op_type != "QuantizeLinear":
                steps.append(FloatStep(node, self.opset))
        return steps

    @property
    def integer_steps(self) -> list[IntegerStep]:
        return [step for step in self.steps if isinstance(step, IntegerStep)]

    @property
    def float_nodes(self) -> list[ir.Node]:
        return [step.node for step in self.steps if isinstance(step, FloatStep)]

    # -- run time ----------------------------------------------------------------------------

    def run_all(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every tensor of the run, by name: codes for quantized tensors, floats for the rest."""
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise InputError(f"missing input(s) {', '.join(missing)}; the model takes {', '.join(self.input_names)}")
        env: dict[str, np.ndarray] = dict(self.constants)
        env.update({name: np.asarray(value) for name, value in feeds.items()})
        for step in self.steps:
            if isinstance(step, IntegerStep):
                env[step.output] = step.run([env[name] for name in step.inputs])
            elif isinstance(step, QuantizeStep):
                env[step.output.name] = step.run(env)
            elif isinstance(step, DequantizeStep):
                env[step.output] = step.run(env)
            else:
                for value, result in zip(step.node.outputs, step.run(env)):
                    if value is not None and value.name:
                        env[value.name] = result
        return env

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        env = self.run_all(feeds)
        return {name: env[name] for name in outputs or self.output_names}

    def close(self) -> None:
        pass

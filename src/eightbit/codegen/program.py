"""A quantized model as a list of C steps between integer inputs and outputs (docs, section 10).

The reference backend's steps are read in order: quantize steps at graph inputs become the
library's inputs, integer steps become C steps, dequantize steps at graph outputs become its
outputs. A float Gemm or MatMul by a constant matrix fed only by dequantized codes (the product
whose output the model keeps in float, eq. 7c) becomes an integer product that returns its int32
accumulators, with one float scale per column to read them by. Anything else left in float is refused: the library is
integer only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from eightbit.backends.integer_ops import IntegerStep, Quantized
from eightbit.backends.reference import DequantizeStep, FloatStep, QuantizeStep, ReferenceSession
from eightbit.codegen.steps import CStep, Tensor, accumulator_gemm, emit
from eightbit.errors import InputError
from eightbit.ir.graph import attribute


@dataclasses.dataclass(frozen=True)
class Boundary:
    """A graph input or output: its codes (or accumulators) and the float scale(s) they are read by.

    `scale` holds one value, or one per column of the last axis for accumulators.
    """

    name: str
    tensor: Tensor
    scale: tuple[float, ...]
    zero_point: int
    qmin: int
    qmax: int


@dataclasses.dataclass(frozen=True)
class Program:
    """The C steps in run order and the boundaries they connect."""

    steps: tuple[CStep, ...]
    inputs: tuple[Boundary, ...]
    outputs: tuple[Boundary, ...]


def _concrete_feeds(session: ReferenceSession) -> dict[str, np.ndarray]:
    """Zeros in each input's shape, batch 1: the library is made for one sample at a time."""
    feeds = {}
    for value in session.model.graph.inputs:
        dims = list(value.shape.dims) if value.shape is not None else []
        shape = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(dims)]
        unknown = [str(d) for d in shape if not isinstance(d, int)]
        if unknown:
            raise InputError(f"input {value.name!r} has size(s) {', '.join(unknown)} not fixed beyond the batch; "
                             "the C library needs fixed shapes: export the float model with them fixed")
        feeds[value.name] = np.zeros(shape, dtype=np.float32)
    return feeds


def _boundary(grid: Quantized, name: str, env: dict[str, np.ndarray]) -> Boundary:
    if not grid.per_tensor:
        raise InputError(f"{name}: per-channel scales at a graph input or output are not supported by the C library")
    codes = env[grid.name]
    return Boundary(name, Tensor(grid.name, codes.shape, codes.dtype), (grid.s,), grid.zp, grid.fmt.qmin,
                    grid.fmt.qmax)


def _integer_step(step: IntegerStep, index: int, env: dict[str, np.ndarray], constants: set[str]) -> CStep:
    if not step.fits_int32:
        raise InputError(f"{step.node}: its accumulators may exceed int32 (bound {step.accumulator_bound}); the C "
                         "library accumulates in int32, so quantize with --weight-range 7bit or export-int instead")
    inputs = tuple(Tensor(name, env[name].shape, env[name].dtype) for name in step.inputs if name not in constants)
    aux = tuple(env[name] for name in step.inputs if name in constants)
    output = Tensor(step.output, env[step.output].shape, env[step.output].dtype)
    return emit(step, f"s{index}", inputs, output, aux)


def _kept_float(node: ir.Node) -> InputError:
    return InputError(f"{node.name}: {node.op_type} runs in float in this model and the C library is integer only; "
                      "quantize without --exclude for it, or use export-int and run the float part yourself")


def _gemm_grids(node: ir.Node, dequantized: dict[str, DequantizeStep]) -> list[Quantized | None]:
    """The grids of a float Gemm's inputs where each is dequantized codes, else InputError."""
    grids = []
    for value in node.inputs:
        source = dequantized.get(value.name) if value is not None and value.name else None
        if value is not None and value.name and source is None:
            raise _kept_float(node)
        grids.append(source.source if source is not None else None)
    return grids


def _plain_product(node: ir.Node) -> bool:
    """A Gemm without scaling or a transposed input, or a MatMul: rows times a matrix, plus a bias."""
    if node.op_type == "MatMul":
        return True
    return node.op_type == "Gemm" and (float(attribute(node, "alpha", 1.0)), float(attribute(node, "beta", 1.0)),
                                       int(attribute(node, "transA", 0))) == (1.0, 1.0, 0)


def _float_product(step: FloatStep, index: int, dequantized: dict[str, DequantizeStep],
                   constants: dict[str, np.ndarray], env: dict[str, np.ndarray]) -> tuple[CStep, Boundary]:
    """A graph-output Gemm or MatMul of dequantized codes by a constant matrix, as its integer accumulators and
    their per-column scales."""
    node = step.node
    if not _plain_product(node) or not node.outputs[0].is_graph_output():
        raise _kept_float(node)
    grids = _gemm_grids(node, dequantized) + [None]
    a, w, bias = grids[0], grids[1], grids[2]
    trans_b = bool(attribute(node, "transB", 0))
    weights = constants.get(w.name) if w is not None else None
    if a is None or weights is None or weights.ndim != 2 or not a.per_tensor or \
            not (w.per_tensor or w.axis % 2 == (0 if trans_b else 1)):
        raise _kept_float(node)
    columns = weights.shape[0] if trans_b else weights.shape[1]
    scale = np.float32(a.s) * np.broadcast_to(w.scale.reshape(-1).astype(np.float32), (columns,))
    bias_codes = None
    if bias is not None:
        bias_codes = constants.get(bias.name)
        bias_scale = np.broadcast_to(bias.scale.reshape(-1).astype(np.float32), (columns,))
        if bias_codes is None or np.any(bias.zero_point != 0) or not np.array_equal(bias_scale, scale):
            raise _kept_float(node)
    codes = env[a.name]
    rows = Tensor(a.name, (codes.size // codes.shape[-1], codes.shape[-1]), codes.dtype)
    output = Tensor(node.outputs[0].name, env[node.outputs[0].name].shape, np.dtype(np.int32))
    c_step = accumulator_gemm(node, f"s{index}", rows, a.zp, weights, w.zero_point.reshape(-1).astype(np.int64),
                              bias_codes, trans_b, output)
    return c_step, Boundary(output.name, output, tuple(float(s) for s in scale), 0, -(2**31), 2**31 - 1)


def lower_program(model: ir.Model) -> Program:
    """The C steps of `model`, run once on zeros (batch 1) to learn every tensor's shape."""
    session = ReferenceSession(model)
    env = session.run_all(_concrete_feeds(session))
    dequantized = {step.output: step for step in session.steps if isinstance(step, DequantizeStep)}
    steps: list[CStep] = []
    inputs: dict[str, Boundary] = {}
    outputs: dict[str, Boundary] = {}
    for index, step in enumerate(session.steps):
        if isinstance(step, QuantizeStep):
            if step.source not in session.input_names:
                raise InputError(f"{step.source}: a float tensor is quantized inside the model, after a float op; "
                                 "the C library is integer only")
            inputs[step.source] = _boundary(step.output, step.source, env)
        elif isinstance(step, IntegerStep):
            steps.append(_integer_step(step, index, env, set(session.constants)))
        elif isinstance(step, DequantizeStep):
            if step.output in session.output_names:
                outputs[step.output] = _boundary(step.source, step.output, env)
        elif isinstance(step, FloatStep):
            c_step, boundary = _float_product(step, index, dequantized, session.constants, env)
            steps.append(c_step)
            outputs[boundary.name] = boundary
        else:
            raise InputError(f"{step.node.name}: the C library has no {step.node.op_type}; use export-int instead")
    missing = [name for name in session.input_names if name not in inputs] + \
              [name for name in session.output_names if name not in outputs]
    if missing:
        raise InputError(f"{', '.join(missing)}: not quantized at the model's edge; the C library takes models "
                         "whose inputs and outputs eightbit quantize wrote")
    return Program(tuple(steps), tuple(inputs[n] for n in session.input_names),
                   tuple(outputs[n] for n in session.output_names))

"""The grids of a model that is already quantized (QDQ): read, kept, and the pairs taken out."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from eightbit.config import IntegerFormat, Scheme, integer_format
from eightbit.errors import InputError
from eightbit.ir.graph import add_initializer, constant_array, qdq_parameters, replace_output, unique_name
from eightbit.quant import dequantize, quantize
from eightbit.quant.affine import regrid

# ir.Value.meta key: the GivenGrid a QDQ model gave this tensor.
GIVEN_GRID = "eightbit.given_grid"


@dataclasses.dataclass(frozen=True)
class GivenGrid:
    """A tensor's grid as a QDQ model states it: scale and zero point, per tensor (axis None) or
    per channel along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None

    @property
    def starts_at_zero(self) -> bool:
        """Its lowest code is real 0: quantizing onto it computes a Relu (eq. 8)."""
        return bool(np.all(self.zero_point == np.iinfo(self.zero_point.dtype).min))

    @property
    def top(self) -> float:
        """The largest real value on the grid."""
        highest = np.iinfo(self.zero_point.dtype).max
        return float(np.max(self.scale.astype(np.float64) * (highest - self.zero_point.astype(np.float64))))

    def same_as(self, other: GivenGrid) -> bool:
        return (self.axis == other.axis and self.zero_point.dtype == other.zero_point.dtype
                and np.array_equal(self.scale, other.scale) and np.array_equal(self.zero_point, other.zero_point))

    def describe(self) -> str:
        return f"scale {float(self.scale.reshape(-1)[0]):.6g}, zero point {int(self.zero_point.reshape(-1)[0])}" + (
            f" ({self.scale.size} channels)" if self.axis is not None else "")


def given_grid(value: ir.Value) -> GivenGrid | None:
    return value.meta.get(GIVEN_GRID)


def grid_in_format(value: ir.Value, grid: GivenGrid, fmt: IntegerFormat, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """The given grid stored in the scheme's format, or a one-line InputError naming the tensor."""
    try:
        return regrid(grid.scale, grid.zero_point, fmt)
    except ValueError as error:
        raise InputError(
            f"tensor {value.name!r}: the model's Q/DQ grid ({grid.describe()}) does not fit scheme {scheme!r}: "
            f"{error}; convert it with the scheme it was trained or quantized for"
        ) from None


def weight_grid_choice(
    value: ir.Value, array: np.ndarray, scheme: Scheme, axis: int | None
) -> tuple[int | None, tuple[np.ndarray, np.ndarray] | None]:
    """(axis, (scale, zero point)) of a weight whose grid a QDQ model gives, in the scheme's weight
    format; (`axis`, None) if it gives none: the scheme's own rule then chooses the grid. Every
    given code must fit the format (InputError otherwise)."""
    given = given_grid(value)
    if given is None:
        return axis, None
    scale, zero_point = grid_in_format(value, given, scheme.weights, scheme.name)
    codes = quantize(array, scale, zero_point, integer_format(zero_point.dtype), given.axis)
    fmt = scheme.weights
    if np.any((codes < fmt.qmin) | (codes > fmt.qmax)):
        raise InputError(f"weight {value.name!r}: the model's codes reach beyond scheme {scheme.name!r}'s weight "
                         f"range [{fmt.qmin}, {fmt.qmax}]; its weights must be quantized within that range")
    return given.axis, (scale, zero_point)


# Ops whose output holds their first input's values, moved: a grid given for the input holds for the output.
RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity")


def _carry_through_reshapes(graph: ir.Graph) -> None:
    """Each output of a RESHAPES op whose input has a per-tensor given grid, and which has none, takes it."""
    for node in graph:  # in graph order: a chain of reshapes carries the grid to its end
        if node.op_type not in RESHAPES or node.domain not in ("", "ai.onnx") or not node.inputs:
            continue
        grid, output = given_grid(node.inputs[0]), node.outputs[0]
        if grid is not None and grid.axis is None and given_grid(output) is None:
            output.meta[GIVEN_GRID] = grid


class ReadQDQ(ir.passes.InPlacePass):
    """Rules, for the QuantizeLinear / DequantizeLinear nodes of an already quantized model:
    - x -> Q -> DQ -> readers, x computed at run time: the readers read x again and x keeps the
      pair's grid (GIVEN_GRID), per tensor;
    - integer codes -> DQ, or a float constant -> Q -> DQ: a float constant holding the
      dequantized values (eq. 1), keeping the grid, per tensor or per channel;
    - what a reshape or a permutation (RESHAPES) makes of a tensor with a grid holds the same
      values: it keeps that grid (an exporter may write a Flatten as a Reshape after the pair).
    The converter then quantizes those tensors on exactly these grids instead of calibrating
    them. Any other Q or DQ (codes a graph output, a DQ of a run-time integer input, grids
    that are not constants) stays in the graph and is computed in float.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        taken: set[str] = set()
        modified = False
        for node in list(graph):
            if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
                continue
            parameters = qdq_parameters(node)
            if parameters is None:
                continue
            source = node.inputs[0]
            codes = constant_array(source)
            quantizer = source.producer()
            if codes is None and quantizer is not None and quantizer.op_type == "QuantizeLinear":
                given = qdq_parameters(quantizer)
                if given is None or not all(np.array_equal(a, b) for a, b in zip(given, parameters)):
                    continue
                weights = constant_array(quantizer.inputs[0])
                if weights is None:
                    modified |= self._activation(graph, node, quantizer.inputs[0], parameters)
                    continue
                grid = self._grid(parameters, weights.ndim)
                codes = quantize(weights, grid.scale, grid.zero_point, integer_format(grid.zero_point.dtype),
                                 grid.axis)
            if codes is None:
                continue
            self._constant(graph, node, codes, parameters, taken)
            modified = True
        if modified:
            common_passes.RemoveUnusedNodesPass()(model)
            _carry_through_reshapes(graph)
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _grid(parameters: tuple[np.ndarray, np.ndarray, int], ndim: int) -> GivenGrid:
        scale, zero_point, axis = parameters
        if scale.size == 1:
            return GivenGrid(scale.reshape(()), zero_point.reshape(()), None)
        return GivenGrid(scale.reshape(-1), zero_point.reshape(-1), axis % ndim)

    def _activation(self, graph: ir.Graph, node: ir.Node, value: ir.Value,
                    parameters: tuple[np.ndarray, np.ndarray, int]) -> bool:
        if parameters[0].size != 1 or value.is_graph_input() and node.outputs[0].is_graph_output():
            return False  # per-channel activations have no integer kernels; an input passed straight out stays
        grid = self._grid(parameters, 0)
        known = given_grid(value)
        if known is not None and not known.same_as(grid):
            raise InputError(f"tensor {value.name!r} is quantized onto two different grids ({known.describe()}; "
                             f"{grid.describe()}); give each tensor one QuantizeLinear")
        if value.is_graph_output() and node.outputs[0].is_graph_output():
            return False
        value.meta[GIVEN_GRID] = grid
        replace_output(graph, node.outputs[0], value, takes_name=False)
        graph.remove(node, safe=True)
        return True

    def _constant(self, graph: ir.Graph, node: ir.Node, codes: np.ndarray,
                  parameters: tuple[np.ndarray, np.ndarray, int], taken: set[str]) -> None:
        grid = self._grid(parameters, codes.ndim)
        values = dequantize(codes, grid.scale, grid.zero_point, grid.axis)
        output = node.outputs[0]
        constant = add_initializer(graph, unique_name(graph, f"{output.name}_given", taken), values)
        constant.meta[GIVEN_GRID] = grid
        replace_output(graph, output, constant, takes_name=False)
        graph.remove(node, safe=True)

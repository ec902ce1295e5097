"""Hard-sigmoid gates written as ops ONNX Runtime runs as integer kernels.

ONNX Runtime has no integer HardSigmoid or HardSwish: each stays a float island, a
DequantizeLinear before and a QuantizeLinear after (measured on PP-OCRv4 det: 48 such
conversions around its hard-swishes, 1.4 ms, plus 1.5 ms of float HardSigmoid and Mul, of a
14.6 ms int8 run). hard_sigmoid(x) = clip(alpha x + beta, 0, 1) is an affine map then a clamp,
which a depthwise 1x1 convolution (weight alpha, bias beta) followed by Clip(0, 1) computes,
and the Clip folds into the convolution's output grid (eq. 8). hard_swish(x) = x hard_sigmoid(x)
then is one Mul more. Both are integer kernels in ONNX Runtime (QLinearConv, QLinearMul).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from eightbit.ir.graph import (
    add_initializer,
    attribute,
    constant_array,
    replace_output,
    single_consumer,
    unique_name,
)
from eightbit.passes.fuse_activation import CLAMP, clamp_bounds

HARD_SWISH = (1 / 6, 0.5)  # hard-swish(x) = x · clip(x / 6 + 1/2, 0, 1): the gate's slope and offset


def _channels(value: ir.Value) -> int | None:
    shape = value.shape
    if shape is None or len(shape) != 4 or not isinstance(shape[1], int):
        return None
    return shape[1]


class HardGatesAsConvolutions(ir.passes.InPlacePass):
    """Rules, for NCHW inputs with a known channel count C:
    HardSigmoid(x; alpha, beta) → Clip(Conv(x, alpha, beta, group=C, 1x1), 0, 1);
    HardSwish(x) → Mul(x, the same with alpha = 1/6, beta = 1/2).
    Only the op types in `ops` are rewritten.
    """

    def __init__(self, ops: tuple[str, ...] = ("HardSigmoid", "HardSwish")) -> None:
        super().__init__()
        self.ops = ops

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        taken: set[str] = set()
        modified = False
        for node in list(graph):
            if node.op_type not in self.ops or node.domain not in ("", "ai.onnx"):
                continue
            x = node.inputs[0]
            channels = _channels(x)
            if channels is None or x.dtype != ir.DataType.FLOAT or x.is_graph_input():
                continue
            if node.op_type == "HardSigmoid":
                alpha, beta = attribute(node, "alpha", 0.2), attribute(node, "beta", 0.5)
            else:
                alpha, beta = HARD_SWISH
            new, result = gate_form(graph, node, x, np.full((channels,), alpha, np.float32), beta,
                                    product=node.op_type == "HardSwish", taken=taken)
            graph.insert_after(node, new)
            replace_output(graph, node.outputs[0], result)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)


def gate_form(graph: ir.Graph, node: ir.Node, x: ir.Value, alpha: np.ndarray, beta: float, *, product: bool,
              taken: set[str]) -> tuple[list[ir.Node], ir.Value]:
    """The nodes computing clip(alpha_c · x + beta, 0, 1) (one alpha per channel of `x`), times `x` if
    `product` (hard-swish), in place of `node`: returned with the value that stands for `node`'s output,
    not yet inserted in `graph`."""
    channels = alpha.size
    base = node.outputs[0].name or node.name
    weight = add_initializer(graph, unique_name(graph, f"{base}_gate_weight", taken),
                             np.asarray(alpha, np.float32).reshape(channels, 1, 1, 1))
    bias = add_initializer(graph, unique_name(graph, f"{base}_gate_bias", taken),
                           np.full((channels,), beta, np.float32))
    low = add_initializer(graph, unique_name(graph, f"{base}_gate_low", taken), np.array(0.0, np.float32))
    high = add_initializer(graph, unique_name(graph, f"{base}_gate_high", taken), np.array(1.0, np.float32))
    affine = ir.node("Conv", [x, weight, bias], {"group": channels, "kernel_shape": [1, 1]},
                     name=f"{node.name}_gate_affine")
    clip = ir.node("Clip", [affine.outputs[0], low, high], name=f"{node.name}_gate")
    new = [affine, clip]
    for value in (affine.outputs[0], clip.outputs[0]):
        value.dtype, value.shape = ir.DataType.FLOAT, x.shape
    affine.outputs[0].name = unique_name(graph, f"{base}_gate_affine", taken)
    if not product:
        return new, clip.outputs[0]  # hard-sigmoid: the clipped gate takes the node's output name
    clip.outputs[0].name = unique_name(graph, f"{base}_gate", taken)
    multiply = ir.node("Mul", [x, clip.outputs[0]], name=node.name)
    multiply.outputs[0].dtype, multiply.outputs[0].shape = ir.DataType.FLOAT, x.shape
    return [*new, multiply], multiply.outputs[0]


def is_gate_ramp(node: ir.Node) -> bool:
    """Whether only a Clip to [0, 1] reads `node`'s output: the affine ramp of a gate as gate_form writes it."""
    reader = single_consumer(node.outputs[0])
    return reader is not None and reader.op_type == "Clip" and clamp_bounds(reader) == (0.0, 1.0)


def _swish_gate_slopes(node: ir.Node, x: ir.Value) -> np.ndarray | None:
    """The per-channel slopes of `node` where it is a hard-swish gate convolution reading `x`: depthwise 1x1,
    positive weights, bias 1/2. This pass makes them with weight 1/6; an equalized hard-swish (eq. 35b) has
    1/(6 f_c) on channel c."""
    if node.op_type != "Conv" or len(node.inputs) != 3 or node.inputs[0] is not x:
        return None
    weight, bias = constant_array(node.inputs[1]), constant_array(node.inputs[2])
    channels = _channels(x)
    if weight is None or bias is None or channels is None or attribute(node, "group", 1) != channels:
        return None
    if weight.shape != (channels, 1, 1, 1) or not bool(np.all(weight > 0)):
        return None
    return weight.reshape(-1) if bool(np.all(bias == np.float32(HARD_SWISH[1]))) else None


def swish_slope(x: ir.Value) -> float:
    """The smallest slope of the hard-swish gate that reads `x` (1/6 for a plain hard-swish): its live range
    (eq. 8a) holds for every channel. Call where swish_product(x) found the gate."""
    return min(float(slopes.min()) for use in x.uses()
               if (slopes := _swish_gate_slopes(use.node, x)) is not None)


def swish_product(x: ir.Value) -> ir.Node | None:
    """The Mul computing hard-swish(x) in gate form, where it and its gate are all that read `x` (the gate's
    Clip fused away or not): then x enters only through hard-swish, and what clipping x does to the product
    is what it does to hard-swish (docs/quantization.md, eq. 8a)."""
    readers = [use.node for use in x.uses()]
    if len(readers) != 2 or x.is_graph_output():
        return None
    gate = next((n for n in readers if _swish_gate_slopes(n, x) is not None), None)
    product = next((n for n in readers if n.op_type == "Mul"), None)
    if gate is None or product is None or x not in product.inputs:
        return None
    gated = gate.outputs[0]
    if gated.meta.get(CLAMP) == (0.0, 1.0):  # the gate's Clip(0, 1), fused into the convolution's grid
        return product if gated in product.inputs else None
    uses = gated.uses()
    clip = uses[0].node if len(uses) == 1 and uses[0].node.op_type == "Clip" else None
    bounds = [constant_array(v) if v is not None else None for v in clip.inputs[1:]] if clip is not None else []
    if len(bounds) != 2 or any(b is None for b in bounds) or (float(bounds[0]), float(bounds[1])) != (0.0, 1.0):
        return None  # an unclipped affine map: not a hard-swish
    return product if clip.outputs[0] in product.inputs else None

"""Per-output-channel scale and shift folded into the constants of a linear op.

A linear op here is Conv, ConvTranspose or Gemm with constant weights: its output channel
c is computed from weight slice c, so y_c * f_c + t_c is the same op with weights * f_c
and bias * f_c + t_c. This is the shared rule behind batch-norm folding and affine folding.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from eightbit.ir.graph import add_initializer, attribute, constant_array, unique_name

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm")


def float_weight(node: ir.Node) -> np.ndarray | None:
    """The constant float32 weight of a linear op whose channels can be scaled (Conv, ConvTranspose, Gemm without
    transA), else None."""
    if node.op_type not in LINEAR_OPS or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return None
    weight = constant_array(node.inputs[1])
    if weight is None or weight.dtype != np.float32:
        return None
    if node.op_type == "Gemm" and (attribute(node, "transA", 0) or weight.ndim != 2):
        return None
    return weight


def output_channels(node: ir.Node) -> int | None:
    """Number of output channels of a foldable linear op, else None."""
    weight = float_weight(node)
    if weight is None:
        return None
    if node.op_type == "Conv":
        return weight.shape[0]
    if node.op_type == "ConvTranspose":
        return weight.shape[1] * attribute(node, "group", 1)
    return weight.shape[0] if attribute(node, "transB", 0) else weight.shape[1]


def output_rank(node: ir.Node) -> int:
    return 2 if node.op_type == "Gemm" else float_weight(node).ndim


def channel_vector(constant: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """`constant` as a [channels] vector if it broadcasts against the output only along axis 1."""
    if constant.ndim > rank:
        return None
    shape = (1,) * (rank - constant.ndim) + constant.shape
    if any(size != 1 for axis, size in enumerate(shape) if axis != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(constant.reshape(shape[1]), (channels,)).astype(np.float32)


def set_constant(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, taken: set[str]) -> None:
    """Give input `index` of `node` the new constant, leaving other readers of the old one as they were."""
    old = node.inputs[index] if index < len(node.inputs) else None
    base = old.name if old is not None else f"{node.name or node.op_type}_bias"
    value = add_initializer(graph, unique_name(graph, f"{base}_folded", taken), array.astype(np.float32))
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, value)
    if old is not None and not old.uses() and old.is_initializer() and not old.is_graph_output():
        del graph.initializers[old.name]


def fold_scale_and_shift(
    graph: ir.Graph, node: ir.Node, scale: np.ndarray | None, shift: np.ndarray | None, taken: set[str]
) -> None:
    """Rewrite `node` so that its output becomes output * scale + shift (per output channel)."""
    channels = output_channels(node)
    weight = float_weight(node)
    bias = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if bias is None:
        bias = np.zeros(channels, dtype=np.float32)
    if node.op_type == "Gemm":
        bias = np.broadcast_to(bias * attribute(node, "beta", 1.0), (channels,)).astype(np.float32)
        if "beta" in node.attributes:
            node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    if scale is not None:
        if node.op_type == "Conv":
            weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        elif node.op_type == "ConvTranspose":
            groups = attribute(node, "group", 1)
            grouped = weight.reshape((groups, weight.shape[0] // groups) + weight.shape[1:])
            factor = scale.reshape((groups, 1, weight.shape[1]) + (1,) * (weight.ndim - 2))
            weight = (grouped * factor).reshape(weight.shape)
        elif attribute(node, "transB", 0):
            weight = weight * scale[:, None]
        else:
            weight = weight * scale[None, :]
        bias = bias * scale
        set_constant(graph, node, 1, weight, taken)
    if shift is not None:
        bias = bias + shift
    set_constant(graph, node, 2, bias, taken)

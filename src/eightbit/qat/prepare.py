"""prepare(): capture a PyTorch model with torch.fx and put the converter's quantization into it.

The rules mirror what the converter does to the exported ONNX graph (plan/ops.py,
passes/fuse_activation.py), so that training simulates the integer model:
- a Conv followed by a BatchNorm (its only reader) becomes one QuantConv (the BN folded in);
- Conv, Linear, Add, Mul, Cat, average pooling and the activations have their own output grid:
  an ActivationQuantizer follows each; with an asymmetric activation format a Relu, Relu6 or
  Hardtanh(0, b) that is the only reader of such an op is fused: the quantizer follows it instead
  (eq. 8);
- MaxPool, Flatten, reshapes, transposes, Identity and Dropout move codes: no grid of their own;
- a tensor such an op reads that no quantizer produces (a graph input, the output of an op left
  in float) gets a quantizer of its own;
- anything else stays float and is listed in `float_ops`.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from eightbit.config import Scheme, SchemeKind, scheme_named
from eightbit.qat.modules import QuantConv, QuantizedWeights, QuantLinear
from eightbit.qat.quantizers import ActivationQuantizer

F = nn.functional

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_OWN_GRID_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Sigmoid, nn.Hardsigmoid, nn.Hardswish, nn.LeakyReLU,
                     nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                     nn.AdaptiveAvgPool3d)
_MOVING_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Flatten, nn.Identity, nn.Dropout)
_OWN_GRID_FUNCTIONS = {operator.add, operator.mul, torch.add, torch.mul, torch.cat, torch.concat, torch.relu,
                       F.relu, F.relu6, F.hardtanh, torch.sigmoid, F.sigmoid, F.hardswish, F.hardsigmoid,
                       F.leaky_relu, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                       F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
_MOVING_FUNCTIONS = {torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze,
                     F.max_pool1d, F.max_pool2d, F.max_pool3d, F.dropout}
_OWN_GRID_METHODS = {"add", "mul", "relu", "sigmoid"}
_MOVING_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "contiguous"}


class CaptureError(ValueError):
    """The model could not be captured as a graph."""


@dataclasses.dataclass(frozen=True)
class FloatOp:
    """An op training leaves in float, as the converter will."""

    node: str
    op: str


def _target(gm: fx.GraphModule, node: fx.Node):
    return gm.get_submodule(node.target) if node.op == "call_module" else node.target


def _is_tensor(node) -> bool:
    return isinstance(node, fx.Node) and "tensor_meta" in node.meta


def _kind(gm: fx.GraphModule, node: fx.Node) -> str:
    """"weights", "own" (own output grid), "moves" (codes pass through), "batch_norm", or "float"."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, (QuantizedWeights, *_CONVS, nn.Linear)):
            return "weights"
        if isinstance(module, _BATCH_NORMS):
            return "batch_norm"
        if isinstance(module, nn.Hardtanh) and not isinstance(module, nn.ReLU6) and module.min_val != 0.0:
            return "float"
        if isinstance(module, _OWN_GRID_MODULES):
            return "own"
        if isinstance(module, _MOVING_MODULES):
            return "moves"
        return "float"
    if node.op == "call_function":
        if node.target in _OWN_GRID_FUNCTIONS:
            return "own"
        return "moves" if node.target in _MOVING_FUNCTIONS else "float"
    if node.op == "call_method":
        if node.target in _OWN_GRID_METHODS:
            return "own"
        return "moves" if node.target in _MOVING_METHODS else "float"
    return "other"


def _clamp_bounds(gm: fx.GraphModule, node: fx.Node) -> tuple[float, float] | None:
    """(0, b) for an activation the converter can fuse (Relu, Relu6, Hardtanh(0, b)), else None."""
    target = _target(gm, node)
    if isinstance(target, nn.ReLU) or target in (F.relu, torch.relu) or (node.op == "call_method"
                                                                          and target == "relu"):
        return 0.0, float("inf")
    if isinstance(target, nn.Hardtanh) and target.min_val == 0.0:
        return 0.0, float(target.max_val)
    if target is F.relu6:
        return 0.0, 6.0
    return None


def _resolve_scheme(scheme: str | Scheme, weight_bits: int | None) -> Scheme:
    scheme = scheme if isinstance(scheme, Scheme) else scheme_named(scheme)
    if scheme.kind is not SchemeKind.STATIC:
        raise ValueError(f"scheme {scheme.name!r} quantizes no activations; train for 'eightbit' or 'po2'")
    return scheme if weight_bits is None else scheme.with_weight_bits(weight_bits)


def prepare(model: nn.Module, example_inputs: Sequence[torch.Tensor], scheme: str | Scheme = "eightbit", *,
            weight_bits: int | None = None, freeze_batch_norm_after: int | None = None) -> fx.GraphModule:
    """A trainable copy of `model` that computes what the converter's integer model will compute.

    `scheme`: "eightbit" (u8 activations, s8 per-channel weights) or "po2" (s8 everywhere, scales
    2^k, 16-bit biases), or a Scheme. `weight_bits` (2-8) narrows the weight codes. Batch norms
    follow their batch statistics until `freeze_batch_norm_after` training steps (None: never
    freeze; eval mode always uses the running statistics). The model itself is not changed.
    The returned module lists the ops it leaves in float in `float_ops`.
    """
    scheme = _resolve_scheme(scheme, weight_bits)
    example_inputs = tuple(example_inputs)
    source = copy.deepcopy(model)
    try:
        gm = fx.symbolic_trace(source)
    except Exception as error:  # torch.fx raises many types; all mean "not capturable"
        raise CaptureError(f"torch.fx could not capture {type(model).__name__}: {error}. Move data-dependent "
                           "control flow out of forward(), or prepare the submodules that can be captured") from None
    with torch.no_grad():
        was_training = gm.training
        ShapeProp(gm.eval()).propagate(*example_inputs)
        gm.train(was_training)
    _fold_batch_norms(gm, scheme, freeze_batch_norm_after)
    float_ops = _insert_quantizers(gm, scheme)
    gm.recompile()
    gm.float_ops = float_ops
    gm.example_inputs = example_inputs
    gm.scheme = scheme
    return gm


def _replace_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module) -> None:
    parent_name, _, name = node.target.rpartition(".")
    setattr(gm.get_submodule(parent_name) if parent_name else gm, name, module)


def _fold_batch_norms(gm: fx.GraphModule, scheme: Scheme, freeze_after: int | None) -> None:
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, _CONVS):
            users = list(node.users)
            batch_norm = None
            if len(users) == 1 and users[0].op == "call_module" and isinstance(
                    gm.get_submodule(users[0].target), _BATCH_NORMS):
                batch_norm = gm.get_submodule(users[0].target)
                users[0].replace_all_uses_with(node)
                gm.graph.erase_node(users[0])
            _replace_module(gm, node, QuantConv(module, batch_norm, scheme, freeze_after))
        elif isinstance(module, nn.Linear):
            _replace_module(gm, node, QuantLinear(module, scheme))


def _insert_quantizers(gm: fx.GraphModule, scheme: Scheme) -> list[FloatOp]:
    graph = gm.graph
    fuses = not scheme.activations.symmetric  # eq. 8 needs zero_point = qmin
    quantizer_of: dict[fx.Node, ActivationQuantizer] = {}  # a tensor -> the quantizer whose grid it is on
    count = 0

    def add_quantizer(after: fx.Node, requantizes: bool) -> fx.Node:
        nonlocal count
        name = f"quantizer_{count}"
        count += 1
        quantizer = ActivationQuantizer(scheme.activations, requantizes)
        gm.add_submodule(name, quantizer)
        users = list(after.users)
        with graph.inserting_after(after):
            quantized = graph.call_module(name, (after,))
        quantized.meta = dict(after.meta)
        for user in users:
            user.replace_input_with(after, quantized)
        quantizer_of[quantized] = quantizer
        return quantized

    float_ops: list[FloatOp] = []
    fused: set[fx.Node] = set()
    for node in list(graph.nodes):
        kind = _kind(gm, node)
        if node in fused:
            continue
        if kind in ("weights", "own"):
            for argument in node.all_input_nodes:
                if _is_tensor(argument) and argument not in quantizer_of:
                    add_quantizer(argument, requantizes=False)
            module = _target(gm, node)
            if isinstance(module, QuantizedWeights):
                module.set_input_quantizer(quantizer_of[node.all_input_nodes[0]])
            users = list(node.users)
            last = node
            if fuses and len(users) == 1 and _clamp_bounds(gm, users[0]) is not None:
                last = users[0]  # the activation is fused: one grid, after it
                fused.add(last)
            add_quantizer(last, requantizes=True)
        elif kind == "moves":
            source = node.all_input_nodes[0] if node.all_input_nodes else None
            if source in quantizer_of:
                quantizer_of[node] = quantizer_of[source]
        elif kind in ("float", "batch_norm"):
            float_ops.append(FloatOp(node.name, _describe(gm, node)))
    return float_ops


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    target = _target(gm, node)
    if isinstance(target, nn.Module):
        return type(target).__name__
    return getattr(target, "__name__", str(target))

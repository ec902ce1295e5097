"""The graph helpers every layer uses: reading and creating constant tensors, names, and rewiring in an onnx_ir
graph."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import onnx_ir as ir


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's array if it is a constant (an initializer or a folded value), else None."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return value.const_value.numpy()


def constant_operand(node: ir.Node) -> tuple[int, np.ndarray] | None:
    """(index, array) of the constant input of a two-input node whose other input is not constant."""
    if len(node.inputs) != 2:
        return None
    arrays = [constant_array(value) for value in node.inputs]
    if (arrays[0] is None) == (arrays[1] is None):
        return None
    index = 0 if arrays[0] is not None else 1
    return index, arrays[index]


def unique_name(graph: ir.Graph, base: str, taken: set[str]) -> str:
    """A value name not used in the graph, derived from `base`."""
    if not taken:
        taken.update(v.name for node in graph for v in node.outputs if v.name)
        taken.update(v.name for v in graph.inputs if v.name)
        taken.update(graph.initializers)
    name, counter = base, 1
    while name in taken:
        name = f"{base}_{counter}"
        counter += 1
    taken.add(name)
    return name


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register `array` as an initializer called `name` and return its value."""
    array = np.array(array, order="C")  # np.ascontiguousarray would turn a scalar into shape [1]
    tensor = ir.Tensor(array, name=name)  # what ir.tensor makes of an array, without its checks of the type
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    graph.register_initializer(value)
    return value


def attribute(node: ir.Node, name: str, default):
    """The attribute's Python value, or `default` when the node does not set it."""
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def single_consumer(value: ir.Value) -> ir.Node | None:
    """The only node reading `value`, if exactly one does and `value` is not a graph output."""
    uses = value.uses()
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def replace_output(graph: ir.Graph, old: ir.Value, new: ir.Value, *, takes_name: bool = True) -> None:
    """Make every reader of `old` read `new`; `new` takes over `old`'s name if `old` is a graph output.

    With `takes_name` (a rewrite whose `new` now computes what `old` computed), `new` is renamed
    after `old` in any case, so that the tensors of the rewritten graph keep the original model's
    names (unless `new` is a graph input, initializer or output, whose names are fixed).
    `new` also inherits `old`'s type and shape where it has none of its own.
    """
    if new.dtype is None and old.type is not None:
        new.type = old.type
    if new.shape is None:
        new.shape = old.shape
    renamable = new.producer() is not None and not new.is_graph_output()
    if old.is_graph_output() or (takes_name and renamable and old.name):
        name = old.name
        old.name = None
        new.name = name
    old.replace_all_uses_with(new, replace_graph_outputs=True)


def rewrite_until_unchanged(graph: ir.Graph, rewrite: Callable[[ir.Node, set[str]], bool]) -> bool:
    """Offer every node of `graph` to `rewrite(node, taken names)`, which says whether it changed the graph,
    round after round until a round changes nothing (one fold can make the next possible); whether any did."""
    taken: set[str] = set()
    modified = False
    while True:
        changed = False
        for node in list(graph):
            if node.graph is graph and rewrite(node, taken):  # (a node an earlier rewrite removed is passed over)
                changed = True
        if not changed:
            return modified
        modified = True


def qdq_parameters(node: ir.Node) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(scale, zero point, axis) of a QuantizeLinear / DequantizeLinear node whose parameters are
    constants, else None. Without a zero point, 0 of the codes' type (uint8 for QuantizeLinear).
    Blocked quantization and QuantizeLinear's output_dtype are not read: None.
    """
    scale = constant_array(node.inputs[1])
    has_zero = len(node.inputs) > 2 and node.inputs[2] is not None
    zero = constant_array(node.inputs[2]) if has_zero else None
    if scale is None or (has_zero and zero is None) or attribute(node, "block_size", 0):
        return None
    if node.op_type == "QuantizeLinear" and attribute(node, "output_dtype", 0):
        return None
    if zero is None:
        codes = node.inputs[0].dtype if node.op_type == "DequantizeLinear" else None
        zero = np.zeros(scale.shape, codes.numpy() if codes is not None else np.uint8)
    return scale.astype(np.float32), zero, int(attribute(node, "axis", 1))


def graph_values(graph: ir.Graph) -> Iterator[ir.Value]:
    """Every value of `graph`: its inputs, initializers and node outputs."""
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from node.outputs

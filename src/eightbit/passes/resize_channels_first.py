"""Nearest-neighbour Resize fenced by two Reshapes that change nothing, so that it runs on codes
channels-first.

ONNX Runtime runs int8 convolutions channels-last and pushes its layout transposes through the ops
between them, a Resize among them; its nearest-neighbour kernel on uint8 codes is fast channels-first
and slow channels-last (measured, [1, 96, 40, 40] upsampled x2: 40 us channels-first, 800 us
channels-last; float channels-first 75 us). A Reshape to the same shape ([0, 0, 0, 0]) is a wall the
transposes do not cross: the Resize between two of them stays channels-first, and the transposes the
runtime adds at the walls cost less than the difference (PP-OCRv4 det, the six upsamplings of its
feature pyramid: 12.0 -> 10.9 ms a run, the same outputs; docs/quantization.md, section 6b).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from eightbit.ir.graph import add_initializer, attribute, replace_output


def _rank(value: ir.Value) -> int | None:
    return len(value.shape) if value.shape is not None else None


class ResizeChannelsFirst(ir.passes.InPlacePass):
    """Rule: Resize(x) in nearest mode on a 4-D x becomes Reshape(x, [0, 0, 0, 0]) -> Resize ->
    Reshape(·, [0, 0, 0, 0])."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        same_shape = None
        modified = False
        for resize in list(graph):
            if resize.op_type != "Resize" or attribute(resize, "mode", "nearest") != "nearest":
                continue
            if _rank(resize.inputs[0]) != 4 or _rank(resize.outputs[0]) not in (None, 4):
                continue
            if same_shape is None:
                same_shape = add_initializer(graph, f"{resize.name or 'resize'}_same_shape", np.zeros(4, np.int64))
            source, result = resize.inputs[0], resize.outputs[0]
            wall_in = ir.node("Reshape", [source, same_shape], name=f"{resize.name}_channels_first_in")
            wall_in.outputs[0].name = f"{source.name}_channels_first"
            wall_in.outputs[0].shape, wall_in.outputs[0].type = source.shape, source.type
            graph.insert_before(resize, wall_in)
            resize.replace_input_with(0, wall_in.outputs[0])
            wall_out = ir.node("Reshape", [result, same_shape], name=f"{resize.name}_channels_first_out")
            wall_out.outputs[0].shape, wall_out.outputs[0].type = result.shape, result.type
            graph.insert_after(resize, wall_out)
            name = result.name
            replace_output(graph, result, wall_out.outputs[0])
            wall_out.replace_input_with(0, result)  # (replace_output pointed the wall at itself)
            result.name = f"{name}_channels_first"
            modified = True
        return ir.passes.PassResult(model, modified)

"""`eightbit export-c`: a quantized model as a self-contained C99 library (docs, section 10).

Two files, `<name>.h` and `<name>.c`, with no dependency beyond the C standard library:

* `<name>_invoke(codes in..., codes out...)`: integer only. Every step is a loop nest over
  int8/uint8 codes with int32 accumulators, Q0.31 multipliers and shifts; constants live in
  flash (`static const`), tensors in one static arena whose bytes are reused once a tensor is
  dead (codegen/arena.py).
* `<name>_run(float in..., float out...)`: quantizes the inputs (eq. 5), invokes, and reads the
  outputs back as float (eq. 1), for hosts with a float unit.

The functions use static memory, so one call at a time.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import onnx_ir as ir

from eightbit.codegen.arena import Arena, Lifetime, plan_arena
from eightbit.codegen.program import Boundary, Program, lower_program
from eightbit.codegen.steps import CStep, Tensor
from eightbit.codegen.text import ARITHMETIC, c_type, float_literal, identifier
from eightbit.errors import InputError
from eightbit.ir import write_atomically

MARK = "/* Written by eightbit export-c."
C_KEYWORDS = frozenset("auto break case char const continue default do double else enum extern float for goto if "
                       "inline int long register restrict return short signed sizeof static struct switch typedef "
                       "union unsigned void volatile while".split())


@dataclasses.dataclass(frozen=True)
class CLibrary:
    """The library's text and what it costs a device: constant bytes (flash) and static bytes (RAM)."""

    name: str
    header: str
    source: str
    flash_bytes: int
    ram_bytes: int
    steps: int
    inputs: tuple[Boundary, ...]
    outputs: tuple[Boundary, ...]


def _arena(program: Program) -> Arena:
    """Offsets of every tensor a step writes; graph outputs live to the end."""
    last_read: dict[str, int] = {}
    for index, step in enumerate(program.steps):
        for tensor in step.inputs:
            last_read[tensor.name] = index
    end = len(program.steps)
    outputs = {boundary.tensor.name for boundary in program.outputs}
    return plan_arena([Lifetime(step.output.name, step.output.bytes, index,
                                end if step.output.name in outputs else last_read.get(step.output.name, index))
                       for index, step in enumerate(program.steps)])


def _pointer(tensor: Tensor, arena: Arena, inputs: dict[str, str], const: bool) -> str:
    if tensor.name in inputs:
        return inputs[tensor.name]
    qualifier = "const " if const else ""
    return f"({qualifier}{c_type(tensor.dtype)} *)(eb_arena + {arena.offsets[tensor.name]})"


def _step_function(step: CStep) -> str:
    parameters = [f"const {c_type(t.dtype)} *x{i}" for i, t in enumerate(step.inputs)]
    parameters.append(f"{c_type(step.output.dtype)} *y")
    body = "\n".join("    " + line if line else line for line in step.body.splitlines())
    return f"/* {step.comment} */\n{step.constants}static void {step.prefix}({', '.join(parameters)})\n{{\n{body}\n}}\n"


def _signatures(name: str, program: Program, names: dict[str, str]) -> tuple[str, str]:
    """The prototypes of `<name>_invoke` and `<name>_run`."""
    codes = [f"const {c_type(b.tensor.dtype)} *{names[b.name]}" for b in program.inputs] + \
            [f"{c_type(b.tensor.dtype)} *{names[b.name]}" for b in program.outputs]
    floats = [f"const float *{names[b.name]}" for b in program.inputs] + \
             [f"float *{names[b.name]}" for b in program.outputs]
    return f"void {name}_invoke({', '.join(codes)})", f"void {name}_run({', '.join(floats)})"


def _invoke(signature: str, program: Program, arena: Arena, names: dict[str, str]) -> str:
    inputs = {b.tensor.name: names[b.name] for b in program.inputs}
    lines = ["    uint8_t *const eb_arena = (uint8_t *)eb_arena_storage;"]
    for step in program.steps:
        arguments = [_pointer(t, arena, inputs, True) for t in step.inputs]
        arguments.append(_pointer(step.output, arena, {}, False))
        lines.append(f"    {step.prefix}({', '.join(arguments)});")
    for b in program.outputs:
        lines.append(f"    memcpy({names[b.name]}, eb_arena + {arena.offsets[b.tensor.name]}, {b.tensor.bytes});")
    return f"{signature}\n{{\n" + "\n".join(lines) + "\n}\n"


def _read_back(b: Boundary, name: str, scale_array: str) -> str:
    """Codes (or accumulators) of an output to floats: s (q - zp) (eq. 1), or acc * s[column]."""
    if len(b.scale) == 1:
        value = f"{float_literal(b.scale[0])} * (float)((int32_t){name}_codes[i] - {b.zero_point})"
    else:
        value = f"(float){name}_codes[i] * {scale_array}[i % {len(b.scale)}]"
    return f"    for (int i = 0; i < {b.tensor.size}; ++i) {name}[i] = {value};"


def _run(signature: str, library: str, program: Program, names: dict[str, str]) -> str:
    """`<name>_run`: quantize (eq. 5: round half to even, then the zero point, then clamp), invoke, read back."""
    lines = []
    for b in program.inputs + program.outputs:
        lines.append(f"    static {c_type(b.tensor.dtype)} {names[b.name]}_codes[{b.tensor.size}];")
    for b in program.inputs:
        n = names[b.name]
        lines.append(f"    for (int i = 0; i < {b.tensor.size}; ++i) {{\n"
                     f"        const float v = rintf({n}[i] / {float_literal(b.scale[0])}) + {b.zero_point}.0f;\n"
                     f"        {n}_codes[i] = ({c_type(b.tensor.dtype)})(v < {b.qmin}.0f ? {b.qmin} : "
                     f"v > {b.qmax}.0f ? {b.qmax} : (int32_t)v);\n    }}")
    arguments = ", ".join(names[b.name] + "_codes" for b in program.inputs + program.outputs)
    lines.append(f"    {library}_invoke({arguments});")
    lines += [_read_back(b, names[b.name], f"{library}_{names[b.name]}_scale") for b in program.outputs]
    return f"{signature}\n{{\n" + "\n".join(lines) + "\n}\n"


def _scale_arrays(library: str, program: Program, names: dict[str, str]) -> str:
    """The per-column scales of accumulator outputs, readable by callers of `_invoke`."""
    return "".join(
        f"const float {library}_{names[b.name]}_scale[{len(b.scale)}] = {{"
        f"{', '.join(float_literal(s) for s in b.scale)}}};\n"
        for b in program.outputs if len(b.scale) > 1)


def _header(library: str, program: Program, names: dict[str, str], signatures: tuple[str, str],
            flash: int, ram: int) -> str:
    guard = f"{library.upper()}_H"
    lines = [f"{MARK} Integer-only inference, one sample per call, static memory.",
             f"   Constants (flash): {flash} bytes. Static tensors (RAM): {ram} bytes. */",
             f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", ""]
    for b in program.inputs + program.outputs:
        upper = f"{library}_{names[b.name]}".upper()
        lines.append(f"/* {b.name}: {b.tensor.size} {c_type(b.tensor.dtype)}, shape {list(b.tensor.shape)} */")
        lines.append(f"#define {upper}_SIZE {b.tensor.size}")
        if len(b.scale) == 1:
            lines += [f"#define {upper}_SCALE {float_literal(b.scale[0])}",
                      f"#define {upper}_ZERO_POINT {b.zero_point}"]
        else:
            lines.append(f"extern const float {library}_{names[b.name]}_scale[{len(b.scale)}];  "
                         "/* float = accumulator * scale[column] */")
    lines += ["", "/* Codes in, codes (or int32 accumulators) out: integer arithmetic only. */", f"{signatures[0]};",
              "/* Floats in and out: quantizes the inputs, invokes, reads the outputs back as floats. */",
              f"{signatures[1]};", "", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def build_library(model: ir.Model, name: str) -> CLibrary:
    """The header and source of `model` as the C library `name`."""
    program = lower_program(model)
    taken = {"eb_arena", "eb_arena_storage"}
    names = {b.name: identifier(b.name, taken) for b in program.inputs + program.outputs}
    arena = _arena(program)
    signatures = _signatures(name, program, names)
    scales = sum(4 * len(b.scale) for b in program.outputs if len(b.scale) > 1)
    flash = sum(step.flash_bytes for step in program.steps) + scales
    ram = arena.size + sum(b.tensor.bytes for b in program.inputs + program.outputs)
    source = "\n".join([
        f"{MARK} Model: {model.graph.name or name}; {len(program.steps)} integer steps. */",
        "#include <math.h>", "#include <stdint.h>", "#include <string.h>", "", f'#include "{name}.h"', "",
        ARITHMETIC, *(_step_function(step) for step in program.steps), _scale_arrays(name, program, names),
        f"static uint32_t eb_arena_storage[{max(arena.size // 4, 1)}];", "",
        _invoke(signatures[0], program, arena, names), _run(signatures[1], name, program, names)])
    return CLibrary(name, _header(name, program, names, signatures, flash, ram), source, flash, ram,
                    len(program.steps), program.inputs, program.outputs)


def _writable(path: Path) -> None:
    """Refuse to replace a file this command did not write."""
    if path.exists() and (not path.is_file() or not path.read_bytes().startswith(MARK.encode())):
        raise InputError(f"{path}: exists and was not written by export-c; move it or choose another -o folder")


def export_c(model: ir.Model, directory: str | os.PathLike, name: str) -> CLibrary:
    """Write `<name>.h` and `<name>.c` of `model` into `directory` (made if missing, its parent must exist)."""
    if not name.isidentifier() or not name.isascii() or name in C_KEYWORDS:
        raise InputError(f"--name {name!r} is not a C identifier; use letters, digits and _ only, not a C keyword")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory}: is a file; give -o a folder for the .h and .c files")
    if not directory.parent.is_dir():
        raise InputError(f"{directory.parent}: does not exist; create it or choose another -o")
    paths = (directory / f"{name}.h", directory / f"{name}.c")
    for path in paths:
        _writable(path)
    library = build_library(model, name)
    directory.mkdir(exist_ok=True)
    for path, text in zip(paths, (library.header, library.source)):
        write_atomically(path, lambda temporary, text=text: temporary.write_text(text))
    return library

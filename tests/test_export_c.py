"""`eightbit export-c`: the generated C compiles cleanly and computes what the reference backend computes.

Each library is compiled with the system C compiler (`-Wall -Wextra -Werror -std=c99 -pedantic`)
next to a small driver that feeds it samples from a file, and its outputs are compared with the
reference backend's, code for code.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import eightbit
from conftest import small_cnn
from eightbit.backends import ReferenceSession
from eightbit.backends.reference import DequantizeStep, FloatStep
from eightbit.cli import main
from eightbit.codegen import CLibrary, export_c
from eightbit.codegen.arena import Lifetime, plan_arena
from eightbit.codegen.text import c_type
from eightbit.demo import shipped_digits, shipped_model
from eightbit.errors import InputError
from eightbit.ir import as_model, load_model
from eightbit.kernels.matmul import gemm, matmul
from op_cases import CASES, qdq_model

COMPILER = shutil.which("cc") or shutil.which("gcc")
needs_compiler = pytest.mark.skipif(COMPILER is None, reason="no C compiler on this machine")
FLAGS = ["-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic", "-O1"]

DRIVER = """\
#include <stdio.h>
#include <string.h>
#include "{name}.h"

int main(int argc, char **argv)
{{
{buffers}
    FILE *in, *out;
    if (argc != 4) return 2;
    in = fopen(argv[2], "rb");
    out = fopen(argv[3], "wb");
    if (in == NULL || out == NULL) return 2;
    if (strcmp(argv[1], "run") == 0) {{
        while ({read_floats}) {{
            {name}_run({float_arguments});
{write_floats}
        }}
    }} else {{
        while ({read_codes}) {{
            {name}_invoke({code_arguments});
{write_codes}
        }}
    }}
    fclose(in);
    fclose(out);
    return 0;
}}
"""


def _driver(library: CLibrary) -> str:
    """A main() that runs the library on every sample of a file: floats through _run, codes through _invoke."""
    boundaries = [(f"i{k}", b) for k, b in enumerate(library.inputs)] + \
                 [(f"o{k}", b) for k, b in enumerate(library.outputs)]
    buffers = "\n".join(f"    static float {n}f[{b.tensor.size}];\n    static {c_type(b.tensor.dtype)} "
                        f"{n}q[{b.tensor.size}];" for n, b in boundaries)
    inputs, outputs = boundaries[:len(library.inputs)], boundaries[len(library.inputs):]

    def reads(kind: str) -> str:
        return " && ".join(f"fread({n}{kind}, sizeof {n}{kind}, 1, in) == 1" for n, _ in inputs)

    def writes(kind: str) -> str:
        return "\n".join(f"            fwrite({n}{kind}, sizeof {n}{kind}, 1, out);" for n, _ in outputs)

    return DRIVER.format(name=library.name, buffers=buffers, read_floats=reads("f"), read_codes=reads("q"),
                         float_arguments=", ".join(f"{n}f" for n, _ in boundaries),
                         code_arguments=", ".join(f"{n}q" for n, _ in boundaries),
                         write_floats=writes("f"), write_codes=writes("q"))


def _build(model, directory: Path, name: str = "net") -> tuple[CLibrary, Path]:
    library = export_c(as_model(model), directory, name)
    (directory / "driver.c").write_text(_driver(library))
    binary = directory / "driver"
    subprocess.run([COMPILER, *FLAGS, "-o", str(binary), str(directory / "driver.c"), str(directory / f"{name}.c"),
                    "-lm"], check=True, capture_output=True, text=True)
    return library, binary


def _run(binary: Path, mode: str, samples: list[list[np.ndarray]], outputs, directory: Path) -> list[np.ndarray]:
    """Each sample's arrays in, one array per library output back (stacked over the samples)."""
    (directory / "in.bin").write_bytes(b"".join(np.ascontiguousarray(a).tobytes() for s in samples for a in s))
    subprocess.run([str(binary), mode, str(directory / "in.bin"), str(directory / "out.bin")], check=True)
    raw = (directory / "out.bin").read_bytes()
    dtypes = [np.dtype(np.float32) if mode == "run" else np.dtype(b.tensor.dtype) for b in outputs]
    record = sum(b.tensor.size * d.itemsize for b, d in zip(outputs, dtypes))
    assert len(raw) == record * len(samples)
    results, offset = [[] for _ in outputs], 0
    for _ in samples:
        for k, (b, d) in enumerate(zip(outputs, dtypes)):
            size = b.tensor.size * d.itemsize
            results[k].append(np.frombuffer(raw[offset:offset + size], dtype=d).reshape(b.tensor.shape))
            offset += size
    return [np.stack(r) for r in results]


def _dequantized_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """The single-op model with its output codes read back as floats, as quantize writes a graph output."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    codes = graph.output[0]
    graph.node.append(helper.make_node("DequantizeLinear", [codes.name, "out_s", "out_z"], ["out_float_value"]))
    shape = [d.dim_value for d in codes.type.tensor_type.shape.dim]
    graph.output.remove(codes)
    graph.output.append(helper.make_tensor_value_info("out_float_value", onnx.TensorProto.FLOAT, shape))
    return model


SUPPORTED = [name for name in CASES if name not in ("conv_transpose", "matmul_of_activations")]


@needs_compiler
@pytest.mark.parametrize("name", SUPPORTED)
def test_each_op_matches_the_reference_code_for_code(name, tmp_path):
    model, feeds = qdq_model(CASES[name])
    model = _dequantized_output(model)
    library, binary = _build(model, tmp_path)
    env = ReferenceSession(as_model(model)).run_all(feeds)
    codes = [env[b.tensor.name] for b in library.inputs]
    got_codes = _run(binary, "invoke", [codes], library.outputs, tmp_path)[0][0]
    np.testing.assert_array_equal(got_codes, env["out"])
    got_floats = _run(binary, "run", [[feeds[b.name] for b in library.inputs]], library.outputs, tmp_path)[0][0]
    np.testing.assert_array_equal(got_floats, env["out_float_value"])


@pytest.mark.parametrize("name", ["conv_transpose", "matmul_of_activations"])
def test_an_op_with_no_c_loop_is_refused_by_name(name, tmp_path):
    model, _ = qdq_model(CASES[name])
    with pytest.raises(InputError, match=CASES[name].op_type):
        export_c(as_model(_dequantized_output(model)), tmp_path / "out", "net")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    paths = {}
    for scheme in ("po2", "eightbit"):
        paths[scheme] = folder / f"digits_{scheme}.onnx"
        eightbit.quantize(shipped_model(), {"image": shipped_digits().x_train[:128]}, scheme=scheme,
                          output=paths[scheme])
    return paths


@needs_compiler
def test_po2_digits_library_is_bit_exact_on_every_held_out_image(digits_models, tmp_path):
    model = load_model(digits_models["po2"])
    library, binary = _build(model, tmp_path, "digits")
    images = np.asarray(shipped_digits().x_test, dtype=np.float32)
    env = ReferenceSession(model).run_all({"image": images})
    floats = _run(binary, "run", [[image[None]] for image in images], library.outputs, tmp_path)[0]
    np.testing.assert_array_equal(floats[:, 0], env["logits"])
    codes = _run(binary, "invoke", [[c[None]] for c in env[library.inputs[0].tensor.name]], library.outputs,
                 tmp_path)[0]
    np.testing.assert_array_equal(codes[:, 0], env[library.outputs[0].tensor.name])
    # Every requantization of a po2 model is a shift alone: eb_apply is defined but never called.
    assert library.source.count("eb_apply(") == 1 and "_multiplier[" not in library.source


@needs_compiler
def test_default_digits_library_returns_the_exact_integer_accumulators(digits_models, tmp_path):
    """The default scheme keeps the classifier's output float (eq. 7c): the library returns its int32
    accumulators, which must equal the integer product of the reference's codes, on every image."""
    model = load_model(digits_models["eightbit"])
    library, binary = _build(model, tmp_path, "digits")
    session = ReferenceSession(model)
    images = np.asarray(shipped_digits().x_test, dtype=np.float32)
    env = session.run_all({"image": images})
    gemm_step = next(step for step in session.steps if isinstance(step, FloatStep))
    sources = {step.output: step.source for step in session.steps if isinstance(step, DequantizeStep)}
    a, w, b = (sources[value.name] for value in gemm_step.node.inputs)
    expected = gemm(env[a.name], a.zp, session.constants[w.name], w.zero_point, session.constants[b.name], True)
    accumulators = _run(binary, "invoke", [[c[None]] for c in env[library.inputs[0].tensor.name]],
                        library.outputs, tmp_path)[0]
    assert library.outputs[0].tensor.dtype == np.int32
    np.testing.assert_array_equal(accumulators[:, 0], expected)
    floats = _run(binary, "run", [[image[None]] for image in images], library.outputs, tmp_path)[0][:, 0]
    np.testing.assert_allclose(floats, env["logits"], rtol=1e-5, atol=1e-5)
    assert np.array_equal(floats.argmax(axis=1), env["logits"].argmax(axis=1))


def test_cli_writes_the_library_and_states_flash_and_ram(digits_models, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["export-c", str(digits_models["po2"]), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["digits_po2.c", "digits_po2.h"]
    header = (out / "digits_po2.h").read_text()
    flash = int(header.split("Constants (flash): ")[1].split(" ")[0])
    constants = ReferenceSession(load_model(digits_models["po2"])).constants.values()
    weights = sum(array.size for array in constants if array.dtype == np.int8 and array.ndim > 1)
    assert flash > weights  # the int8 weights, plus biases, shifts and tables
    assert f"{flash} bytes" in printed and "RAM" in printed
    assert main(["export-c", str(digits_models["po2"]), "-o", str(out)]) == 0  # its own files it replaces


def test_cli_never_replaces_a_file_it_did_not_write(digits_models, tmp_path, capsys):
    out = tmp_path / "c"
    out.mkdir()
    (out / "digits.c").write_text("my own code\n")
    assert main(["export-c", str(digits_models["po2"]), "-o", str(out), "--name", "digits"]) == 2
    assert "not written by export-c" in capsys.readouterr().err
    assert (out / "digits.c").read_text() == "my own code\n"
    assert not (out / "digits.h").exists()


def test_a_model_with_float_ops_is_refused_and_nothing_is_written(tmp_path, capsys):
    float_model = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(softmax=True), float_model)
    quantized = tmp_path / "cnn.int8.onnx"
    data = np.random.default_rng(0).normal(0, 1, (8, 3, 16, 16)).astype(np.float32)
    eightbit.quantize(float_model, {"x": data}, output=quantized)
    assert main(["export-c", str(quantized), "-o", str(tmp_path / "c")]) == 2
    assert "integer only" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_the_arena_reuses_dead_tensors_and_never_overlaps_live_ones():
    chain = [Lifetime(f"t{i}", 100, i, i + 1) for i in range(6)]  # each read by the next step only
    arena = plan_arena(chain)
    assert arena.size <= 2 * 104
    lifetimes = chain + [Lifetime("kept", 50, 1, 5)]  # a residual read four steps later
    arena = plan_arena(lifetimes)
    for a in lifetimes:
        for b in lifetimes:
            if a is not b and a.first <= b.last and b.first <= a.last:
                a_range = range(arena.offsets[a.name], arena.offsets[a.name] + a.size)
                b_range = range(arena.offsets[b.name], arena.offsets[b.name] + b.size)
                assert not set(a_range) & set(b_range), (a.name, b.name)


@needs_compiler
def test_a_float_output_matmul_returns_its_exact_accumulators(tmp_path):
    """A linear layer whose output the model keeps float (eq. 7c) over rows of a 3-D input: the C library's int32
    accumulators are the integer product of the reference's codes."""
    from conftest import make_model, tensor, value_info

    rng = np.random.default_rng(3)
    weight = tensor("w", rng.normal(0, 0.5, (16, 5)).astype(np.float32))
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="linear")], [value_info("x", [1, 4, 16])],
                       [value_info("y", [1, 4, 5])], [weight])
    data = rng.normal(0, 1, (32, 4, 16)).astype(np.float32)
    quantized = eightbit.quantize(model, {"x": data[:16, None]}, min_sqnr=None)
    library, binary = _build(quantized, tmp_path)
    assert library.outputs[0].tensor.dtype == np.int32 and len(library.outputs[0].scale) == 5
    session = ReferenceSession(quantized)
    samples = data[16:, None]
    step = next(s for s in session.steps if isinstance(s, FloatStep))
    sources = {s.output: s.source for s in session.steps if isinstance(s, DequantizeStep)}
    a, w = (sources[value.name] for value in step.node.inputs)
    codes = [session.run_all({"x": x})[a.name] for x in samples]
    expected = [matmul(c, a.zp, session.constants[w.name], w.zero_point.reshape(-1)) for c in codes]
    got = _run(binary, "invoke", [[c] for c in codes], library.outputs, tmp_path)[0]
    np.testing.assert_array_equal(got, np.stack(expected))

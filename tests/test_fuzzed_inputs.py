"""Damaged files in: a model or a samples file with bytes changed or cut short is refused with one line (exit 2)
or, where the damage leaves a valid file, quantized (exit 0); never a bug's exit 1, never a file written on
refusal, never an input changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eightbit.cli import main
from eightbit.demo import INPUT_NAME, shipped_digits, shipped_model

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _damaged(original: bytes, cut: int | None, flips: list[tuple[int, int]]) -> bytes:
    """`original` cut to `cut` bytes (where given), then with each (position, byte) of `flips` written over."""
    damaged = bytearray(original[:cut] if cut is not None else original)
    for position, value in flips:
        if damaged:
            damaged[position % len(damaged)] = value
    return bytes(damaged)


damage = st.tuples(st.one_of(st.none(), st.integers(0, 4000)),
                   st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), max_size=6))


def _assert_refused_or_quantized(tmp_path: Path, capsys, damaged: Path, before: bytes, *flags: str,
                                 model: Path | None = None) -> None:
    """`eightbit quantize` of `model` (else `damaged`) with `flags` exits 0, or 2 with one line and no file
    written; `damaged` still holds `before`."""
    out = tmp_path / "out.onnx"
    if out.exists():
        out.unlink()
    code = main(["quantize", str(model or damaged), "-o", str(out), "-q", "--no-report", *flags])
    error = capsys.readouterr().err
    assert code in (0, 2), error
    assert damaged.read_bytes() == before
    if code == 2:
        assert not out.exists() and len(error.strip().splitlines()) == 1


@FUZZ
@given(damage)
def test_a_damaged_model_is_refused_in_one_line_or_quantized(tmp_path, capsys, change):
    model = tmp_path / "model.onnx"
    model.write_bytes(_damaged(Path(shipped_model()).read_bytes(), *change))
    before = model.read_bytes()
    _assert_refused_or_quantized(tmp_path, capsys, model, before, "--scheme", "weights")


@FUZZ
@given(damage)
def test_damaged_samples_are_refused_in_one_line_or_used(tmp_path, capsys, change):
    model = tmp_path / "model.onnx"
    shutil.copy(shipped_model(), model)
    clean = tmp_path / "clean.npz"
    np.savez(clean, **{INPUT_NAME: shipped_digits().x_train[:8]})
    samples = tmp_path / "samples.npz"
    samples.write_bytes(_damaged(clean.read_bytes(), *change))
    before = samples.read_bytes()
    _assert_refused_or_quantized(tmp_path, capsys, samples, before, "--calibration", str(samples), "--min-sqnr", "off",
                                 model=model)


@FUZZ
@given(st.integers(0, 10**6), st.integers(0, 10**6),
       st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45, 0.0]))
def test_a_model_with_extreme_weights_is_refused_in_one_line_or_quantized(tmp_path, capsys, which, where, value):
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(shipped_model())
    tensor = proto.graph.initializer[which % len(proto.graph.initializer)]
    array = numpy_helper.to_array(tensor).copy()
    if array.size and array.dtype == np.float32:
        array.reshape(-1)[where % array.size] = value
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    model = tmp_path / "model.onnx"
    onnx.save(proto, model)
    before = model.read_bytes()
    samples = tmp_path / "samples.npz"
    np.savez(samples, **{INPUT_NAME: shipped_digits().x_train[:16]})
    _assert_refused_or_quantized(tmp_path, capsys, model, before, "--calibration", str(samples))

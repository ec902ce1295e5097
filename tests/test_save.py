"""Outputs are written atomically: synced, renamed into place, with the umask's mode or the replaced file's, and
nothing left behind when the write fails or the process is told to stop."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import onnx_ir as ir
import pytest

from conftest import small_cnn
from eightbit import cli
from eightbit.ir import as_model, load_model, save_model, write_atomically
from eightbit.ir import save as save_module


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_a_new_file_takes_the_umasks_mode(tmp_path, umask_027):
    path = save_model(as_model(small_cnn()), tmp_path / "model.onnx")
    assert _mode(path) == 0o640


def test_a_replaced_file_keeps_its_mode(tmp_path, umask_027):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    os.chmod(path, 0o604)
    save_model(as_model(small_cnn()), path)
    assert _mode(path) == 0o604
    assert load_model(path).graph is not None


def test_a_long_output_name_is_written(tmp_path):
    path = tmp_path / ("m" * 245 + ".onnx")
    save_model(as_model(small_cnn()), path)
    assert load_model(path).graph is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fail(temporary):
        temporary.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_tensors_in_external_data_are_written_beside_the_model_with_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(save_module, "_EXTERNAL_DATA_ABOVE_BYTES", 0)
    path = save_model(as_model(small_cnn()), tmp_path / "big.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    model = load_model(path)
    assert {v.name for v in model.graph.initializers.values()} >= {"w1", "w2"}


def test_sigterm_during_a_write_removes_the_temporary(tmp_path):
    """The CLI's SIGTERM handler raises where the program is; the write in progress cleans up on the way out."""
    path = tmp_path / "out.bin"

    def interrupted(temporary):
        temporary.write_bytes(b"partial")
        cli._terminate(signal.SIGTERM, None)

    with pytest.raises(cli.Terminated):
        write_atomically(path, interrupted)
    assert list(tmp_path.iterdir()) == []


def test_sigterm_ends_a_command_with_143_and_one_line(tmp_path):
    """A real SIGTERM, in a process of its own (the test process's other libraries keep their own handlers)."""
    code = ("import os, signal, sys\n"
            "from eightbit import cli\n"
            "cli._check_threads = lambda args: os.kill(os.getpid(), signal.SIGTERM)\n"
            "sys.exit(cli.main(['explain', 'model.onnx']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 143, result.stderr
    assert result.stderr.strip() == "eightbit: terminated; nothing was written"
    assert list(tmp_path.iterdir()) == []


def _unloadable():
    """small_cnn with its Gemm made an op ONNX does not have (a model eightbit should never make)."""
    model = as_model(small_cnn())
    fc = next(node for node in model.graph if node.name == "fc")
    unknown = ir.node("NoSuchOp", list(fc.inputs), name="fc")
    ir.convenience.replace_nodes_and_values(model.graph, fc, [fc], [unknown], fc.outputs, unknown.outputs)
    return model


@pytest.mark.parametrize("external", [False, True])
def test_a_model_that_does_not_load_replaces_nothing(tmp_path, monkeypatch, external):
    if external:
        monkeypatch.setattr(save_module, "_EXTERNAL_DATA_ABOVE_BYTES", 0)
    path = tmp_path / "out.onnx"
    path.write_bytes(b"old")
    from eightbit.backends.onnxruntime import UnloadableOutput, check_loads
    save_model(as_model(small_cnn()), tmp_path / "good.onnx", check=check_loads)  # a good model passes
    with pytest.raises(UnloadableOutput, match="nothing was written"):
        save_model(_unloadable(), path, check=check_loads)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.onnx", "good.onnx", *(["good.onnx.data"] if external else [])])

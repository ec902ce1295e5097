"""Sample sets read from .npz files a batch at a time: the same values as np.load, in any
order, in bounded memory, with bad rows named."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from eightbit import sources
from eightbit.datasets import InputSpec, load_npz
from eightbit.errors import InputError

SPECS = [InputSpec("x", np.dtype(np.float32), (None, 3, 8, 8)), InputSpec("k", np.dtype(np.int64), (None, 2))]


def _arrays(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(count, 3, 8, 8)), "k": rng.integers(0, 9, (count, 2))}  # float64: converted


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_batches_match_the_arrays_in_any_order(tmp_path, save):
    arrays = _arrays(21)
    path = tmp_path / "d.npz"
    save(path, **arrays)
    samples = load_npz(path, SPECS)
    assert (samples.count, samples.per_sample) == (21, False)
    got = list(samples.batches())
    assert [len(feed["x"]) for feed in got] == [8, 8, 5]
    assert got[0]["x"].dtype == np.float32 and got[0]["k"].dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([feed["x"] for feed in got]), arrays["x"].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([feed["k"] for feed in got]), arrays["k"])
    # a later range, then an earlier one (a compressed member is decompressed again from its start)
    late, early = samples.take(13, 21), samples.take(2, 4)
    np.testing.assert_array_equal(next(late.batches())["x"], arrays["x"][13:21].astype(np.float32))
    np.testing.assert_array_equal(next(early.batches())["k"], arrays["k"][2:4])
    np.testing.assert_array_equal(early.take(1, 5).single_feed()["x"], arrays["x"][3:4].astype(np.float32))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_an_input_of_no_values_per_row_is_read_as_empty_rows(tmp_path, save):
    """An empty KV cache: past length 0, so each row holds no values."""
    path = tmp_path / "cache.npz"
    save(path, tokens=np.arange(10).reshape(5, 2), past=np.zeros((5, 2, 0, 4), np.float32))
    specs = [InputSpec("tokens", np.dtype(np.int64), (None, None)),
             InputSpec("past", np.dtype(np.float32), (None, 2, None, 4))]
    feeds = list(load_npz(path, specs).batches())
    assert sum(len(feed["past"]) for feed in feeds) == 5 and feeds[0]["past"].shape[1:] == (2, 0, 4)


def test_whole_inputs_per_row_and_fortran_order(tmp_path):
    x = np.asfortranarray(np.arange(5 * 1 * 3 * 8 * 8, dtype=np.float32).reshape(5, 1, 3, 8, 8))
    k = np.zeros((5, 1, 2), np.int64)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, k=k)
    samples = load_npz(path, SPECS)
    assert samples.per_sample and samples.count == 5
    feeds = list(samples.batches())
    assert feeds[3]["x"].shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(feeds[3]["x"], x[3])


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_nan_is_named_by_input_and_sample_across_chunks(tmp_path, monkeypatch, save):
    monkeypatch.setattr(sources, "CHECK_CHUNK_BYTES", 3 * 8 * 8 * 8 * 2)  # two rows a chunk
    arrays = _arrays(9)
    arrays["x"][7, 1, 2, 3] = np.inf
    path = tmp_path / "d.npz"
    save(path, **arrays)
    with pytest.raises(InputError, match="input 'x' sample 7 contains NaN or Inf"):
        load_npz(path, SPECS)


def test_truncated_archive_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, **_arrays(16))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(InputError, match="npz"):
        load_npz(path, SPECS)


def _claiming(descr: str, shape: tuple) -> bytes:
    """An .npy file whose header claims `shape`, holding 64 bytes."""
    import struct

    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(64)


def test_a_header_that_claims_more_than_the_file_holds_is_refused_unread(tmp_path):
    """An .npy header may claim any shape: 2**34 samples (6 TiB) in a file of a few hundred bytes."""
    import zipfile

    path = tmp_path / "claims.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", _claiming("<f4", (2**34, 3, 8, 8)))
        archive.writestr("k.npy", _claiming("<i8", (2**34, 2)))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="array '.' is truncated"):
            load_npz(path, SPECS)
        assert tracemalloc.get_traced_memory()[1] < 2**26  # nothing near the claimed size was allocated
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_samples(tmp_path, monkeypatch):
    """Checking and going over 2,000 samples (25 MB) holds one check chunk (here 1 MiB) and one
    batch (0.1 MB) of them at a time, not the file."""
    monkeypatch.setattr(sources, "CHECK_CHUNK_BYTES", 2**20)
    rng = np.random.default_rng(1)
    path = tmp_path / "big.npz"
    np.savez(path, x=rng.normal(size=(2000, 3, 32, 32)).astype(np.float32),
             k=np.zeros((2000, 2), np.int64))
    specs = [InputSpec("x", np.dtype(np.float32), (None, 3, 32, 32)), SPECS[1]]
    tracemalloc.start()
    try:
        samples = load_npz(path, specs)
        total = sum(float(feed["x"].sum()) for feed in samples.batches())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.isfinite(total)
    assert peak < 3 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading a 25 MB set"


def test_complex_samples_for_a_real_input_are_refused_by_name(tmp_path):
    path = tmp_path / "complex.npz"
    np.savez(path, x=np.ones((2, 1, 3), np.complex64))
    with pytest.raises(InputError, match="'x' has dtype complex64.*complex and real values do not convert"):
        load_npz(path, [InputSpec("x", np.dtype(np.float32), (1, 3))])


def test_unsigned_ids_past_the_models_integer_range_are_refused_by_sample(tmp_path):
    path = tmp_path / "ids.npz"
    ids = np.zeros((3, 2), np.uint64)
    ids[2, 1] = np.uint64(2**63 + 5)  # would wrap to a negative int64
    np.savez(path, k=ids)
    with pytest.raises(InputError, match="'k' sample 2 holds values outside int64's range"):
        load_npz(path, [InputSpec("k", np.dtype(np.int64), (None, 2))])
    np.savez(path, k=ids[:2])
    load_npz(path, [InputSpec("k", np.dtype(np.int64), (None, 2))])  # within the range: taken

"""Where sample rows come from: arrays in memory, members of an .npz read from disk row by row,
or image files decoded one at a time.

A source is a sequence of rows (its leading axis) that is read a range at a time, so that
going over a sample set holds one batch in memory, not the set: calibrating on 512 images
costs what calibrating on 32 does.
"""

from __future__ import annotations

import math
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from eightbit.errors import InputError

# The finiteness check at load reads at most this many bytes of a source at a time.
CHECK_CHUNK_BYTES = 16 * 2**20


class RowSource:
    """Rows [start, stop) of an array of `shape` and `dtype`, read on demand."""

    shape: tuple[int, ...]
    dtype: np.dtype
    always_finite = False  # True where no row can hold NaN or Inf (decoded images)

    def rows(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) over the whole source, each piece at most CHECK_CHUNK_BYTES (one row at least)."""
        row_bytes = max(1, math.prod(self.shape[1:]) * self.dtype.itemsize)
        step = max(1, CHECK_CHUNK_BYTES // row_bytes)
        for start in range(0, len(self), step):
            yield start, self.rows(start, min(start + step, len(self)))


class ArrayRows(RowSource):
    """An array already in memory."""

    def __init__(self, array: np.ndarray):
        self.array = np.asarray(array)
        self.shape, self.dtype = self.array.shape, self.array.dtype

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


class NpzMemberRows(RowSource):
    """One array of an .npz archive, read from the file a range of rows at a time.

    Stored (np.savez) members are read at their byte offset in the file; compressed
    (np.savez_compressed) ones are decompressed forward from the last position, from the
    start again when an earlier row is asked for.
    """

    _stream: zipfile.ZipExtFile | None = None  # set before __init__ can fail: __del__ closes them
    _archive: zipfile.ZipFile | None = None

    def __init__(self, path: Path, archive: zipfile.ZipFile, member: str):
        self.path, self.member, self.name = path, member, member[:-4]
        with archive.open(member) as stream:
            version = np.lib.format.read_magic(stream)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(stream)
            self.header_bytes = stream.tell()
        if dtype.hasobject:
            raise InputError(f"{path}: array {self.name!r} holds Python objects; save numeric arrays")
        self.shape, self.dtype, self.fortran_order = tuple(shape), dtype, fortran_order
        self.row_bytes = math.prod(self.shape[1:]) * dtype.itemsize
        info = archive.getinfo(member)
        self.stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
        self.file_offset = _data_offset(path, info) + self.header_bytes if self.stored else 0
        self._position = 0
        self._whole: np.ndarray | None = None

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self.fortran_order:  # rows are not contiguous on disk: read the array once
            if self._whole is None:
                with np.load(self.path, allow_pickle=False) as archive:
                    self._whole = archive[self.name]
            return self._whole[start:stop]
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        if not out.size:  # rows of no values (an empty KV cache's past length 0): nothing to read
            return out
        view = memoryview(out).cast("B")
        if self.stored:
            with open(self.path, "rb") as file:
                file.seek(self.file_offset + start * self.row_bytes)
                got = file.readinto(view)
        else:
            got = self._read_compressed(start * self.row_bytes, view)
        if got != len(view):
            raise InputError(f"{self.path}: array {self.name!r} is truncated; save the .npz again")
        return out

    def _read_compressed(self, offset: int, view: memoryview) -> int:
        if self._stream is None or offset < self._position:
            self.close()
            self._archive = zipfile.ZipFile(self.path)
            self._stream = self._archive.open(self.member)
            self._stream.read(self.header_bytes)
            self._position = 0
        while self._position < offset:
            skipped = len(self._stream.read(min(offset - self._position, CHECK_CHUNK_BYTES)))
            if not skipped:
                return 0
            self._position += skipped
        got = 0
        while got < len(view):
            piece = self._stream.read(len(view) - got)
            if not piece:
                break
            view[got:got + len(piece)] = piece
            got += len(piece)
        self._position += got
        return got

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._archive is not None:
            self._archive.close()
        self._stream = self._archive = None

    def __del__(self) -> None:
        self.close()


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Byte offset in the file of a stored member's data: after its local header (ZIP format, 4.3.7)."""
    with open(path, "rb") as file:
        file.seek(info.header_offset)
        header = file.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise InputError(f"{path}: member {info.filename!r} has a damaged header; save the .npz again")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length


class DecodedRows(RowSource):
    """Rows made one at a time by `decode(index)`, e.g. image files: `shape` is (count, *row shape)."""

    def __init__(self, count: int, row_shape: tuple[int, ...], dtype: np.dtype, decode: Callable[[int], np.ndarray],
                 always_finite: bool = False):
        self.shape, self.dtype, self.decode = (count, *row_shape), np.dtype(dtype), decode
        self.always_finite = always_finite

    def rows(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        for row, index in enumerate(range(start, stop)):
            out[row] = self.decode(index)
        return out


def npz_sources(path: Path) -> dict[str, RowSource]:
    """Each array of the .npz at `path`, keyed by name, without reading the arrays."""
    if not path.is_file():
        raise InputError(f"{path}: no such file; give an .npz with one array per model input")
    try:
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if name.endswith(".npy")]
            if len(members) != len(archive.namelist()):
                raise ValueError("a member that is not an .npy array")
            return {rows.name: rows for rows in (NpzMemberRows(path, archive, member) for member in members)}
    except InputError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise InputError(
            f"{path}: not a readable .npz archive ({type(error).__name__}); save it with numpy.savez"
        ) from None

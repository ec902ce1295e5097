"""Sample sets: the .npz and image-folder inputs of every command, validated against a model.

An .npz holds one array per model input, keyed by input name, samples along the leading
axis. An array whose rank equals the input's holds samples along the model's own batch
axis; one rank higher, each entry along the new leading axis is one whole model input.

Files are read a batch at a time when the samples are used (eightbit.sources), so the
memory a sample set takes does not grow with its number of samples.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx_ir as ir

from eightbit.config import DEFAULT_BATCH
from eightbit.errors import DataWarning, InputError
from eightbit.sources import ArrayRows, DecodedRows, RowSource, npz_sources

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]

    @classmethod
    def of(cls, value: ir.Value) -> InputSpec:
        # A negative size (some exporters write -1) is a dynamic dimension, like a named one.
        dims = tuple(
            (d if d >= 0 else None) if isinstance(d, int) else (str(d) if d is not None else None)
            for d in value.shape or ()
        )
        return cls(value.name, np.dtype(value.dtype.numpy()), dims)


def input_specs(model: ir.Model) -> list[InputSpec]:
    return [InputSpec.of(v) for v in model.graph.inputs]


@dataclasses.dataclass(frozen=True)
class Samples:
    """Validated samples keyed by input name, read a batch at a time from their sources, each
    batch converted to the input's dtype. `per_sample` says whether each row is a whole input;
    `start` and `count` select the rows used."""

    sources: dict[str, RowSource]
    dtypes: dict[str, np.dtype]
    per_sample: bool
    count: int
    batch: int
    fixed_batch: bool = False
    start: int = 0

    def batches(self, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feeds for the runtime, at most `limit` samples in all."""
        total = self.count if limit is None else min(self.count, limit)
        step = 1 if self.per_sample else self.batch
        for first in range(self.start, self.start + total, step):
            stop = min(first + step, self.start + total)
            feeds = {}
            for name, source in self.sources.items():
                rows = np.ascontiguousarray(source.rows(first, stop), dtype=self.dtypes[name])
                feeds[name] = rows[0, ...] if self.per_sample else rows  # a 0-d input stays an array
            yield feeds

    def number_of_batches(self, limit: int | None = None) -> int:
        total = self.count if limit is None else min(self.count, limit)
        step = 1 if self.per_sample else self.batch
        return -(-total // step)

    def take(self, start: int, stop: int) -> Samples:
        """Samples [start, stop) of these as a new set; nothing is read."""
        start = min(max(0, start), self.count)
        count = max(0, min(stop, self.count) - start)
        return dataclasses.replace(self, count=count, start=self.start + start)

    def single_feed(self) -> dict[str, np.ndarray]:
        """The smallest feed the model accepts (one sample, or one fixed-size batch): for timing."""
        return next(self.take(0, self.batch if self.fixed_batch and not self.per_sample else 1).batches())

    def feed_of(self, size: int) -> dict[str, np.ndarray]:
        """One feed of `size` samples (the first ones, repeated where there are fewer), for timing at that batch
        size; the smallest feed where `size` is 1. An InputError where the model's batch dimension is fixed at
        another size."""
        if size == 1:
            return self.single_feed()
        if self.fixed_batch and self.batch != size:
            raise InputError(f"batch {size}: the model's inputs take a fixed batch of {self.batch}; bench it with "
                             f"--batch {self.batch}, or export it with a free batch dimension")
        feed = {}
        for name, source in self.sources.items():
            rows = np.ascontiguousarray(source.rows(self.start, self.start + min(size, self.count)),
                                        dtype=self.dtypes[name])
            if self.per_sample:  # each row a whole input: their own batch axes, joined
                if rows.ndim < 2:
                    raise InputError(f"batch {size}: input {name!r} has no batch axis; bench it with --batch 1")
                rows = rows.reshape(-1, *rows.shape[2:])
            feed[name] = np.concatenate([rows] * -(-size // len(rows)))[:size]
        return feed


def _is_float(dtype: np.dtype) -> bool:
    """A real floating type: numpy's own, or bfloat16 (which numpy knows only through ml_dtypes)."""
    return np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"


def _check_array(path: Path, spec: InputSpec, array: RowSource) -> bool:
    """Validate one source (its shape and dtype, then every row's values, a chunk at a time);
    returns whether its rows are whole model inputs."""
    rank = len(spec.shape)
    if array.ndim == rank + 1:
        per_sample, sample_shape, model_dims = True, array.shape[1:], spec.shape
    elif array.ndim == rank and rank > 0:
        per_sample, sample_shape, model_dims = False, array.shape[1:], spec.shape[1:]
    else:
        raise InputError(
            f"{path}: input {spec.name!r} has shape {list(array.shape)} but the model takes rank {rank} "
            f"{list(spec.shape)}; put samples along the leading axis"
        )
    for got, want in zip(sample_shape, model_dims):
        if isinstance(want, int) and got != want:
            raise InputError(
                f"{path}: input {spec.name!r} samples have shape {list(sample_shape)}, the model expects "
                f"{list(model_dims)}; resize the data"
            )
    if per_sample and rank and isinstance(spec.shape[0], int) and array.shape[1] != spec.shape[0]:
        raise InputError(f"{path}: input {spec.name!r} batch size {array.shape[1]} != model's {spec.shape[0]}")
    if np.issubdtype(spec.dtype, np.complexfloating) != np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{path}: input {spec.name!r} has dtype {array.dtype}; the model takes {spec.dtype} "
                         "(complex and real values do not convert)")
    if _is_float(spec.dtype):
        if not (np.issubdtype(array.dtype, np.number) or _is_float(array.dtype)):
            raise InputError(f"{path}: input {spec.name!r} has dtype {array.dtype}; the model takes {spec.dtype}")
        if _is_float(array.dtype) and not array.always_finite:
            _check_float_values(path, spec, array)
    elif not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
        raise InputError(f"{path}: input {spec.name!r} has dtype {array.dtype}; the model takes {spec.dtype}")
    elif np.issubdtype(array.dtype, np.integer) and np.issubdtype(spec.dtype, np.integer):
        _check_integer_range(path, spec, array)
    return per_sample


def _check_float_values(path: Path, spec: InputSpec, array: RowSource) -> None:
    """Every sample finite, in its own type and in the model's (a float64 value past float32's range would
    become Inf): else refused, naming the first sample. A warning where the input holds one value in every
    sample: ranges calibrated on it say nothing of other data."""
    low, high = np.inf, -np.inf
    narrower = np.dtype(spec.dtype).itemsize < np.dtype(array.dtype).itemsize
    for first, rows in array.chunks():
        values = rows.reshape(rows.shape[0], -1)
        if not values.size:
            continue
        checks = [(np.isfinite(values).all(axis=1), "NaN or Inf")]
        if narrower:  # float64 values past float32's range would become Inf
            with np.errstate(over="ignore"):
                checks.append((np.isfinite(values.astype(spec.dtype)).all(axis=1), f"a value {spec.dtype} cannot hold"))
        for finite, what in checks:
            if not finite.all():
                bad = first + int(np.flatnonzero(~finite)[0])
                raise InputError(f"{path}: input {spec.name!r} sample {bad} contains {what}; remove or fix it")
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    if array.shape[0] > 1 and low == high:
        warnings.warn(DataWarning(f"{path}: input {spec.name!r} is {low:g} in every sample: ranges calibrated on "
                                  "it say nothing of real data; give real samples"), stacklevel=2)


def _check_integer_range(path: Path, spec: InputSpec, array: RowSource) -> None:
    """Integers that the model's integer type cannot hold (uint64 ids past int64's range would wrap negative):
    refused, naming the first sample that holds one."""
    source, target = np.iinfo(array.dtype), np.iinfo(spec.dtype)
    if source.min >= target.min and source.max <= target.max:
        return
    for first, rows in array.chunks():
        flat = rows.reshape(rows.shape[0], -1)
        outside = np.zeros(flat.shape[0], bool)
        if source.max > target.max:
            outside |= (flat > np.array(target.max).astype(array.dtype)).any(axis=1)
        if source.min < target.min:
            outside |= (flat < np.array(target.min).astype(array.dtype)).any(axis=1)
        if outside.any():
            bad = first + int(np.flatnonzero(outside)[0])
            raise InputError(f"{path}: input {spec.name!r} sample {bad} holds values outside {spec.dtype}'s range "
                             f"(the data is {array.dtype}); give values the model's type can hold")


def samples_from_arrays(arrays: dict[str, np.ndarray], specs: list[InputSpec], source: str = "data") -> Samples:
    """Samples from arrays in memory."""
    return samples_from_sources({name: ArrayRows(array) for name, array in arrays.items()}, specs, source)


def samples_from_sources(sources: dict[str, RowSource], specs: list[InputSpec], source: str = "data") -> Samples:
    path = Path(source)
    names = {spec.name for spec in specs}
    missing = [spec.name for spec in specs if spec.name not in sources]
    unknown = sorted(set(sources) - names)
    if unknown:
        raise InputError(
            f"{path}: unknown input name(s) {', '.join(map(repr, unknown))}; the model's inputs are "
            f"{', '.join(map(repr, sorted(names)))}"
        )
    if missing:
        raise InputError(f"{path}: no array for model input(s) {', '.join(map(repr, missing))}; add them")
    counts = {name: len(rows) for name, rows in sources.items()}
    if any(count == 0 for count in counts.values()):
        raise InputError(f"{path}: the sample set is empty; give at least one sample per input")
    if len(set(counts.values())) > 1:
        raise InputError(f"{path}: inputs hold different numbers of samples {counts}; give the same count for each")
    modes = {_check_array(path, spec, sources[spec.name]) for spec in specs}
    if len(modes) > 1:
        raise InputError(f"{path}: mix of batched and per-sample arrays; give every input the same layout")
    per_sample = modes.pop()
    first = specs[0].shape[0] if specs[0].shape else None
    batch = first if isinstance(first, int) else DEFAULT_BATCH
    count = next(iter(counts.values()))
    if not per_sample and count % batch:
        if isinstance(first, int):
            raise InputError(
                f"{path}: {count} samples cannot be fed in the model's fixed batch of {batch}; "
                f"give a multiple of {batch}"
            )
    ordered = {spec.name: sources[spec.name] for spec in specs}
    dtypes = {spec.name: spec.dtype for spec in specs}
    return Samples(ordered, dtypes, per_sample, count, batch, isinstance(first, int))


def load_npz(path: str | Path, specs: list[InputSpec]) -> Samples:
    path = Path(path)
    return samples_from_sources(npz_sources(path), specs, str(path))


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
    """How an image folder becomes model input: resize to (height, width), pixels in [0, 1],
    then (pixel - mean) / std per channel, laid out as NCHW or NHWC."""

    height: int
    width: int
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "nchw"

    def __post_init__(self) -> None:
        if self.layout not in ("nchw", "nhwc"):
            raise InputError(f"--layout must be nchw or nhwc, got {self.layout!r}")
        if self.height <= 0 or self.width <= 0:
            raise InputError(f"--size must be two positive integers, got {self.height} {self.width}")
        if len(self.mean) not in (1, 3) or len(self.std) not in (1, 3):
            raise InputError("--mean and --std take 1 or 3 values (one per channel)")
        if any(s == 0 for s in self.std):
            raise InputError("--std values must be nonzero")


def _unreadable(path: Path, error: Exception) -> InputError:
    """The refusal of an image file that cannot be decoded, or would take too much memory to."""
    from PIL.Image import DecompressionBombError

    if isinstance(error, DecompressionBombError):
        return InputError(f"{path}: too many pixels to decode safely (a decompression bomb?); shrink it or "
                          "remove it from the folder")
    return InputError(f"{path}: not a readable image; remove it from the folder")


def load_image_folder(folder: str | Path, specs: list[InputSpec], prep: ImagePreprocessing) -> Samples:
    """The images of `folder`, sorted by file name, each decoded and resized when its batch is read."""
    from PIL import Image, UnidentifiedImageError
    from PIL.Image import DecompressionBombError

    folder = Path(folder)
    if len(specs) != 1:
        raise InputError(f"{folder}: an image folder feeds a model with one input; this one has {len(specs)}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no images found (looked for {', '.join(sorted(_IMAGE_SUFFIXES))})")
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)

    def decode(index: int) -> np.ndarray:
        try:
            with Image.open(files[index]) as image:
                rgb = image.convert("RGB").resize((prep.width, prep.height), Image.BILINEAR)
        except (UnidentifiedImageError, OSError, DecompressionBombError) as error:
            raise _unreadable(files[index], error) from None
        pixels = (np.asarray(rgb, dtype=np.float32) / 255.0 - mean) / std
        return pixels.transpose(2, 0, 1) if prep.layout == "nchw" else pixels

    for file in files:  # the headers now, so that a bad file is named before any work
        try:
            with Image.open(file):
                pass
        except (UnidentifiedImageError, OSError, DecompressionBombError) as error:
            raise _unreadable(file, error) from None
    row = (3, prep.height, prep.width) if prep.layout == "nchw" else (prep.height, prep.width, 3)
    rows = DecodedRows(len(files), row, np.float32, decode, always_finite=True)
    return samples_from_sources({specs[0].name: rows}, specs, str(folder))

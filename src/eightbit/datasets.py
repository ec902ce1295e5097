"""Sample sets: the .npz and image-folder inputs of every command, validated against a model.

An .npz holds one array per model input, keyed by input name, samples along the leading
axis. An array whose rank equals the input's holds samples along the model's own batch
axis; one rank higher, each entry along the new leading axis is one whole model input.
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx_ir as ir

from eightbit.config import DEFAULT_BATCH
from eightbit.errors import InputError

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
    """Validated arrays keyed by input name; `per_sample` says whether each entry is a whole input."""

    arrays: dict[str, np.ndarray]
    per_sample: bool
    count: int
    batch: int
    fixed_batch: bool = False

    def batches(self, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feeds for the runtime, at most `limit` samples in all."""
        total = self.count if limit is None else min(self.count, limit)
        step = 1 if self.per_sample else self.batch
        for start in range(0, total, step):
            stop = min(start + step, total)
            if self.per_sample:
                yield {name: array[start] for name, array in self.arrays.items()}
            else:
                yield {name: array[start:stop] for name, array in self.arrays.items()}

    def number_of_batches(self, limit: int | None = None) -> int:
        total = self.count if limit is None else min(self.count, limit)
        step = 1 if self.per_sample else self.batch
        return -(-total // step)

    def take(self, start: int, stop: int) -> Samples:
        """Samples [start, stop) as a new set."""
        arrays = {name: array[start:stop] for name, array in self.arrays.items()}
        count = max(0, min(stop, self.count) - start)
        return Samples(arrays, self.per_sample, count, self.batch, self.fixed_batch)

    def single_feed(self) -> dict[str, np.ndarray]:
        """The smallest feed the model accepts (one sample, or one fixed-size batch): for timing."""
        return next(self.take(0, self.batch if self.fixed_batch and not self.per_sample else 1).batches())


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"{path}: no such file; give an .npz with one array per model input")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise InputError(
            f"{path}: not a readable .npz archive ({type(error).__name__}); save it with numpy.savez"
        ) from None


def _check_array(path: Path, spec: InputSpec, array: np.ndarray) -> bool:
    """Validate one array; returns whether its entries are whole model inputs."""
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
    if np.issubdtype(spec.dtype, np.floating):
        if not np.issubdtype(array.dtype, np.number):
            raise InputError(f"{path}: input {spec.name!r} has dtype {array.dtype}; the model takes {spec.dtype}")
        finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise InputError(f"{path}: input {spec.name!r} sample {bad} contains NaN or Inf; remove or fix it")
    elif not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
        raise InputError(f"{path}: input {spec.name!r} has dtype {array.dtype}; the model takes {spec.dtype}")
    return per_sample


def samples_from_arrays(arrays: dict[str, np.ndarray], specs: list[InputSpec], source: str = "data") -> Samples:
    path = Path(source)
    names = {spec.name for spec in specs}
    missing = [spec.name for spec in specs if spec.name not in arrays]
    unknown = sorted(set(arrays) - names)
    if unknown:
        raise InputError(
            f"{path}: unknown input name(s) {', '.join(map(repr, unknown))}; the model's inputs are "
            f"{', '.join(map(repr, sorted(names)))}"
        )
    if missing:
        raise InputError(f"{path}: no array for model input(s) {', '.join(map(repr, missing))}; add them")
    counts = {name: len(array) if np.ndim(array) else 0 for name, array in arrays.items()}
    if any(count == 0 for count in counts.values()):
        raise InputError(f"{path}: the sample set is empty; give at least one sample per input")
    if len(set(counts.values())) > 1:
        raise InputError(f"{path}: inputs hold different numbers of samples {counts}; give the same count for each")
    modes = {_check_array(path, spec, arrays[spec.name]) for spec in specs}
    if len(modes) > 1:
        raise InputError(f"{path}: mix of batched and per-sample arrays; give every input the same layout")
    per_sample = modes.pop()
    first = specs[0].shape[0] if specs[0].shape else None
    batch = first if isinstance(first, int) else DEFAULT_BATCH
    converted = {spec.name: np.ascontiguousarray(arrays[spec.name], dtype=spec.dtype) for spec in specs}
    count = next(iter(counts.values()))
    if not per_sample and count % batch:
        if isinstance(first, int):
            raise InputError(
                f"{path}: {count} samples cannot be fed in the model's fixed batch of {batch}; "
                f"give a multiple of {batch}"
            )
    return Samples(converted, per_sample, count, batch, isinstance(first, int))


def load_npz(path: str | Path, specs: list[InputSpec]) -> Samples:
    path = Path(path)
    return samples_from_arrays(_read_npz(path), specs, str(path))


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


def load_image_folder(folder: str | Path, specs: list[InputSpec], prep: ImagePreprocessing) -> Samples:
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if len(specs) != 1:
        raise InputError(f"{folder}: an image folder feeds a model with one input; this one has {len(specs)}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no images found (looked for {', '.join(sorted(_IMAGE_SUFFIXES))})")
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                rgb = image.convert("RGB").resize((prep.width, prep.height), Image.BILINEAR)
        except (UnidentifiedImageError, OSError):
            raise InputError(f"{file}: not a readable image; remove it from the folder") from None
        pixels = (np.asarray(rgb, dtype=np.float32) / 255.0 - mean) / std
        images.append(pixels.transpose(2, 0, 1) if prep.layout == "nchw" else pixels)
    stacked = np.stack(images)
    return samples_from_arrays({specs[0].name: stacked}, specs, str(folder))

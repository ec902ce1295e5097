"""Where each intermediate tensor lives: offsets in one static buffer, reused once a tensor is dead.

A tensor is live from the step that writes it to the last step that reads it (graph outputs to
the end of the run). Each new tensor takes the lowest offset where it overlaps no live tensor
(first fit), aligned to 4 bytes, so the buffer needs about the largest set of tensors alive at
once rather than the sum of all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

ALIGNMENT = 4


@dataclasses.dataclass(frozen=True)
class Lifetime:
    """A tensor's bytes and the steps it must survive: written at `first`, last read at `last`."""

    name: str
    size: int
    first: int
    last: int


@dataclasses.dataclass(frozen=True)
class Arena:
    """Offsets of tensors in one buffer of `size` bytes."""

    offsets: Mapping[str, int]
    size: int


def _aligned(value: int) -> int:
    return (value + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _first_fit(size: int, live: Sequence[tuple[int, int]]) -> int:
    """The lowest aligned offset where `size` bytes overlap none of the (offset, size) ranges in `live`."""
    offset = 0
    for start, length in sorted(live):
        if offset + size <= start:
            break
        offset = max(offset, _aligned(start + length))
    return offset


def plan_arena(lifetimes: Sequence[Lifetime]) -> Arena:
    """Place tensors in write order; a tensor's bytes are free again after its last reader ran."""
    placed: dict[str, int] = {}
    live: list[Lifetime] = []
    end = 0
    for tensor in sorted(lifetimes, key=lambda t: t.first):
        live = [other for other in live if other.last >= tensor.first]
        offset = _first_fit(tensor.size, [(placed[other.name], other.size) for other in live])
        placed[tensor.name] = offset
        live.append(tensor)
        end = max(end, offset + tensor.size)
    return Arena(placed, _aligned(end))

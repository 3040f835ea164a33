"""4D series: the same slice positions repeated over time, b-values or acquisitions.

An fMRI run, a diffusion series or a dynamic acquisition repeats one set of
slice positions. dcm2niix writes such a series as one 4D NIfTI; medimg does the
same. Frames are grouped into volumes by the first key that splits them into
complete, identical position sets: the temporal position, the enhanced
dimension indices, the trigger time, the acquisition number, and last the
export order (InstanceNumber; diffusion series, whose b-values and directions
repeat, are ordered so, as dcm2niix does). The key used is recorded as a QA flag
(``4d:temporal_position``...). Positions that repeat unevenly are refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from medimg.errors import DataError
from medimg.io.dicom.frames import Frame

_KEYS: list[tuple[str, Callable[[Frame], Any]]] = [
    ("temporal_position", lambda f: f.temporal),
    ("dimension_index", lambda f: f.volume_key),
    ("trigger_time", lambda f: f.trigger),
    ("acquisition_number", lambda f: f.acquisition),
]


def position_ids(frames: Sequence[Frame], normal: np.ndarray) -> np.ndarray:
    """Index of each frame's slice position along ``normal`` (equal positions share an index)."""
    dist = np.array([float(f.position @ normal) for f in frames])
    order = np.argsort(dist, kind="stable")
    gaps = np.diff(dist[order])
    positive = gaps[gaps > 1e-6]
    tol = max(0.01 * float(np.median(positive)), 1e-4) if positive.size else 1e-4
    ids = np.empty(len(frames), dtype=np.int64)
    ids[order] = np.concatenate([[0], np.cumsum(gaps > tol)]) if len(frames) else []
    return ids


def _by_key(
    frames: Sequence[Frame], ids: np.ndarray, n_pos: int, key: Callable[[Frame], Any], by_storage: bool
) -> list[list[int]] | None:
    values = [key(f) for f in frames]
    if any(v is None for v in values):
        return None
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, v in enumerate(values):
        groups[v].append(i)
    if len(groups) < 2:
        return None
    for members in groups.values():
        if len(members) != n_pos or len({int(ids[i]) for i in members}) != n_pos:
            return None
    if by_storage:  # dimension indices say which volume, not when: keep the order frames are stored in
        return sorted(groups.values(), key=lambda g: min(frames[i].instance for i in g))
    return [groups[v] for v in sorted(groups)]


def _by_instance(frames: Sequence[Frame], ids: np.ndarray, n_t: int) -> list[list[int]]:
    volumes: list[list[int]] = [[] for _ in range(n_t)]
    per_position: dict[int, list[int]] = defaultdict(list)
    for i in sorted(range(len(frames)), key=lambda i: frames[i].instance):
        per_position[int(ids[i])].append(i)
    for members in per_position.values():
        for t, i in enumerate(members):
            volumes[t].append(i)
    return volumes


def group_volumes(frames: Sequence[Frame], normal: np.ndarray) -> tuple[list[list[Frame]], str]:
    """Split frames into volumes of one slice per position; return them and the grouping flag.

    The flag is ``""`` for a 3D series (no position repeats), else ``"4d:<key>"``.

    Raises:
        DataError: when positions repeat unevenly (naming a repeated slice's file and the counts).

    Example:
        >>> volumes, flag = group_volumes(expand_frames(headers), slice_normal(iop))  # doctest: +SKIP
        >>> len(volumes), flag  # doctest: +SKIP
        (120, '4d:temporal_position')
    """
    ids = position_ids(frames, normal)
    counts = np.bincount(ids) if len(ids) else np.zeros(0, dtype=np.int64)
    if not len(counts) or counts.max() == 1:
        return [list(frames)], ""
    if counts.min() != counts.max():
        worst = int(np.argmax(counts))
        example = next(f for f, i in zip(frames, ids, strict=True) if i == worst)
        raise DataError(
            f"{example.header.path.parent}: duplicate slice position(s) repeated unevenly "
            f"({counts.max()} slices at the position of {example.header.path.name}, {counts.min()} at another; "
            f"{len(counts)} positions in all); not one 3D or 4D volume"
        )
    n_t = int(counts[0])
    for name, key in _KEYS:
        groups = _by_key(frames, ids, len(counts), key, by_storage=name == "dimension_index")
        if groups is not None and len(groups) == n_t:
            return [[frames[i] for i in g] for g in groups], f"4d:{name}"
    volumes = _by_instance(frames, ids, n_t)
    return [[frames[i] for i in g] for g in volumes], "4d:instance_order"

"""Lesion boxes in a scan's geometry: world millimetres <-> voxel indices, box files, boxes from masks.

A box is axis-aligned on the scan's voxel grid (the grid the detector sees). It is stored as its
centre in voxel index coordinates (continuous; voxel ``i`` covers ``[i - 0.5, i + 0.5]``) and its
extent in voxels along each array axis. In the world (RAS or LPS, the space of the volume's affine)
the same box is its centre ``affine @ centre`` and its size in millimetres along the scan's axes
(``extent * spacing``). On an oblique grid the box edges follow the voxel axes, not the world axes,
so the mapping is exact both ways: nothing is rounded to the grid and no corner is re-boxed.

Box files (CSV or JSON) give ``case_key``, the centre ``x, y, z`` in world mm and either
``size_x, size_y, size_z`` (mm along the scan's axes i, j, k) or ``diameter`` (mm, LUNA16 style),
with an optional ``space`` (``RAS``, the default, or ``LPS``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.errors import DataError
from medimg.io.volume import Space, Volume


@dataclass(frozen=True)
class VoxelBox:
    """A box on a voxel grid: centre (continuous indices) and extent (voxels) per array axis.

    Example:
        >>> VoxelBox((4.0, 5.0, 2.0), (3.0, 3.0, 1.0)).corners()
        (2.5, 3.5, 1.5, 5.5, 6.5, 2.5)
    """

    centre: tuple[float, float, float]
    extent: tuple[float, float, float]
    score: float = 1.0

    def corners(self) -> tuple[float, float, float, float, float, float]:
        """``(x1, y1, z1, x2, y2, z2)`` in continuous voxel coordinates (MONAI's StandardMode)."""
        c, e = np.asarray(self.centre), np.asarray(self.extent)
        return tuple(float(v) for v in (*(c - e / 2), *(c + e / 2)))  # type: ignore[return-value]

    @classmethod
    def from_corners(cls, corners: Any, score: float = 1.0) -> VoxelBox:
        """The box with corners ``(x1, y1, z1, x2, y2, z2)``."""
        a = np.asarray(corners, dtype=np.float64).reshape(6)
        return cls(tuple((a[:3] + a[3:]) / 2), tuple(a[3:] - a[:3]), float(score))  # type: ignore[arg-type]


@dataclass(frozen=True)
class WorldBox:
    """A box in world millimetres: centre in ``space`` and size in mm along the scan's axes i, j, k."""

    centre_mm: tuple[float, float, float]
    size_mm: tuple[float, float, float]
    score: float = 1.0
    space: Space = "RAS"


def voxel_to_world(box: VoxelBox, volume: Volume, space: Space | None = None) -> WorldBox:
    """The box in world mm on ``volume``'s affine (in ``space``, default the volume's own).

    Example:
        >>> v = Volume(np.zeros((8, 8, 4)), np.diag([2.0, 1.0, 3.0, 1.0]))
        >>> voxel_to_world(VoxelBox((1.0, 2.0, 1.0), (2.0, 2.0, 1.0)), v).centre_mm
        (2.0, 2.0, 3.0)
    """
    space = space or volume.space
    affine = volume.affine_in(space)
    centre = affine[:3, :3] @ np.asarray(box.centre, float) + affine[:3, 3]
    size = np.asarray(box.extent, float) * np.asarray(volume.spacing[:3])
    return WorldBox(
        tuple(float(v) for v in centre),
        tuple(float(v) for v in size),
        box.score,
        space,  # type: ignore[arg-type]
    )


def world_to_voxel(box: WorldBox, volume: Volume) -> VoxelBox:
    """The box on ``volume``'s voxel grid (the inverse of :func:`voxel_to_world`).

    Example:
        >>> v = Volume(np.zeros((8, 8, 4)), np.diag([2.0, 1.0, 3.0, 1.0]))
        >>> world_to_voxel(WorldBox((2.0, 2.0, 3.0), (4.0, 2.0, 3.0)), v)
        VoxelBox(centre=(1.0, 2.0, 1.0), extent=(2.0, 2.0, 1.0), score=1.0)
    """
    affine = volume.affine_in(box.space)
    centre = np.linalg.solve(affine[:3, :3], np.asarray(box.centre_mm, float) - affine[:3, 3])
    extent = np.asarray(box.size_mm, float) / np.asarray(volume.spacing[:3])
    return VoxelBox(
        tuple(float(v) for v in centre),
        tuple(float(v) for v in extent),
        box.score,  # type: ignore[arg-type]
    )


def boxes_from_mask(mask: Volume, min_voxels: int = 1) -> list[VoxelBox]:
    """One box per connected component (26-connected) of the non-zero voxels of ``mask``.

    The box spans the component's voxels (edges on voxel borders); components smaller than
    ``min_voxels`` are dropped.

    Example:
        >>> m = np.zeros((10, 10, 10), np.uint8); m[2:5, 3:5, 4] = 1
        >>> boxes_from_mask(Volume(m, np.eye(4)))[0].corners()
        (1.5, 2.5, 3.5, 4.5, 4.5, 4.5)
    """
    from scipy import ndimage

    data = np.asarray(mask.data)
    if data.ndim != 3:
        raise DataError(f"boxes_from_mask: expected a 3D mask, got shape {data.shape}")
    components, n = ndimage.label(data != 0, structure=np.ones((3, 3, 3)))
    boxes = []
    for index, found in enumerate(ndimage.find_objects(components), start=1):
        if found is None or int((components[found] == index).sum()) < min_voxels:
            continue
        lo = np.array([s.start for s in found], float) - 0.5
        hi = np.array([s.stop for s in found], float) - 0.5
        boxes.append(VoxelBox.from_corners(np.concatenate([lo, hi])))
    return boxes


_CENTRE = ("x", "y", "z")
_SIZE = ("size_x", "size_y", "size_z")


def read_box_file(path: str | os.PathLike[str]) -> dict[str, list[WorldBox]]:
    """Boxes per ``case_key`` from a CSV or JSON box file (see the module docstring for the columns).

    A JSON file is a list of objects with the same keys as the CSV columns, or an object
    ``{"boxes": [...]}``. Cases without a row have no lesion.

    Example:
        >>> read_box_file("boxes.csv")["case_0000"][0].size_mm  # doctest: +SKIP
        (6.0, 6.0, 7.5)
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: box file not found")
    if p.suffix.lower() == ".json":
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}: not valid JSON ({exc})") from exc
        rows = raw.get("boxes") if isinstance(raw, dict) else raw
        if not isinstance(rows, list):
            raise DataError(f"{p}: expected a list of boxes or an object with a 'boxes' list")
        frame = pd.DataFrame(rows)
    elif p.suffix.lower() == ".csv":
        frame = pd.read_csv(p)
    else:
        raise DataError(f"{p}: a box file is .csv or .json, got '{p.suffix}'")
    return _boxes_by_case(frame, p)


def _boxes_by_case(frame: pd.DataFrame, path: Path) -> dict[str, list[WorldBox]]:
    has_size = all(c in frame for c in _SIZE)
    missing = [c for c in ("case_key", *_CENTRE) if c not in frame]
    if missing or not (has_size or "diameter" in frame):
        raise DataError(
            f"{path}: box file misses {missing or ['size_x, size_y, size_z or diameter']}; expected "
            "case_key, x, y, z (world mm) and size_x, size_y, size_z or diameter (mm)"
        )
    out: dict[str, list[WorldBox]] = {}
    for n, row in frame.iterrows():
        space = str(row.get("space", "RAS") if pd.notna(row.get("space", "RAS")) else "RAS").upper()
        if space not in ("RAS", "LPS"):
            raise DataError(f"{path}: row {n}: space must be RAS or LPS, got {space!r}")
        centre = [float(row[c]) for c in _CENTRE]
        size = [float(row[c]) for c in _SIZE] if has_size else [float(row["diameter"])] * 3
        if not np.all(np.isfinite(centre + size)) or min(size) <= 0:
            raise DataError(f"{path}: row {n}: centre and size must be finite and sizes > 0")
        out.setdefault(str(row["case_key"]), []).append(
            WorldBox(tuple(centre), tuple(size), 1.0, space)  # type: ignore[arg-type]
        )
    return out


def box_rows(case_key: str, boxes: list[VoxelBox], volume: Volume) -> list[dict[str, Any]]:
    """One record per box: world centre/size (the volume's space), voxel centre/extent/corners, score."""
    rows = []
    for b in boxes:
        w = voxel_to_world(b, volume)
        rows.append(
            {
                "case_key": case_key,
                "space": w.space,
                **dict(zip(_CENTRE, w.centre_mm, strict=True)),
                **dict(zip(_SIZE, w.size_mm, strict=True)),
                **{f"centre_{a}": c for a, c in zip("ijk", b.centre, strict=True)},
                **{f"extent_{a}": e for a, e in zip("ijk", b.extent, strict=True)},
                "voxel_corners": list(b.corners()),
                "score": float(b.score),
            }
        )
    return rows

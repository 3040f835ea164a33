"""The detector's grid: an axis-wise resampling to the plan spacing that keeps the affine exact.

Resampling is done along the scan's own axes (no reorientation), so the new affine is the old one
times a diagonal scale and a shift: a box on either grid maps to the same world box, to rounding
error only. Intensities are z-scored per volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medimg.detection.boxes import VoxelBox, voxel_to_world, world_to_voxel
from medimg.io.volume import Volume


def to_grid(volume: Volume, spacing: Sequence[float], order: int = 1) -> Volume:
    """``volume`` resampled along its own axes to ``spacing`` (the same volume when it already is).

    The new grid covers the same field of view, centred on the old one; its affine is
    ``A @ [diag(r), o]`` with ``r = new / old spacing``, so world positions are exact.

    Example:
        >>> v = Volume(np.zeros((10, 10, 4), np.float32), np.diag([1.0, 1.0, 3.0, 1.0]))
        >>> to_grid(v, (2.0, 2.0, 3.0)).shape
        (5, 5, 4)
    """
    old = np.asarray(volume.spacing[:3], float)
    new = np.asarray(spacing, float)
    if np.allclose(old, new, rtol=1e-4, atol=0):
        return volume
    from scipy import ndimage

    ratio = new / old
    shape_old = np.asarray(volume.data.shape[:3], float)
    shape_new = np.maximum(1, np.round(shape_old / ratio)).astype(int)
    offset = ((shape_old - 1) - (shape_new - 1) * ratio) / 2
    data = ndimage.affine_transform(
        np.asarray(volume.data, np.float32),
        ratio,
        offset=offset,
        output_shape=tuple(shape_new),
        order=order,
        mode="nearest",
    )
    step = np.eye(4)
    step[:3, :3] = np.diag(ratio)
    step[:3, 3] = offset
    return Volume(data, volume.affine @ step, volume.space, dict(volume.meta))


def move_boxes(boxes: Sequence[VoxelBox], source: Volume, target: Volume) -> list[VoxelBox]:
    """Boxes on ``source``'s grid expressed on ``target``'s grid (through world mm, exact)."""
    return [world_to_voxel(voxel_to_world(b, source, target.space), target) for b in boxes]


def normalise(data: np.ndarray) -> np.ndarray:
    """Z-score of the voxel values (float32); a constant volume gives zeros."""
    x = np.asarray(data, np.float32)
    std = float(x.std())
    return (x - float(x.mean())) / (std if std > 0 else 1.0)

"""Bringing a map from the preprocessed (model) grid back to the source image's exact grid.

Preprocessing reorients and resamples (e.g. RAS, 1.5 mm isotropic); a map computed there must
land on the scan's own voxels so it opens over the scan in 3D Slicer or ITK-SNAP. The
resampling goes through the two affines: source voxel -> millimetres -> model voxel, by the
same function that puts predictions back (:func:`medimg.inference.resample.resample_to_grid`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from medimg.errors import GeometryError
from medimg.inference.resample import resample_to_grid
from medimg.io.nifti import save_nifti
from medimg.io.volume import Space, Volume


def map_to_source_grid(
    map_array: np.ndarray,
    map_affine: np.ndarray,
    source_shape: tuple[int, ...],
    source_affine: np.ndarray,
    order: int = 1,
) -> np.ndarray:
    """Resample ``map_array`` (on the grid of ``map_affine``) onto the source grid.

    Both affines map voxel indices to millimetres in the *same* space (both RAS or both
    LPS). Source voxels outside the map's field of view get 0.

    Args:
        map_array: ``(D, H, W)`` map on the preprocessed grid.
        map_affine: 4x4 affine of that grid.
        source_shape: spatial shape of the source image.
        source_affine: 4x4 affine of the source image.
        order: 1 = trilinear; 0 = nearest, for label maps.

    Returns:
        float32 array of shape ``source_shape``.

    Example:
        >>> a = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
        >>> np.array_equal(map_to_source_grid(a, np.eye(4), (2, 2, 2), np.eye(4)), a)
        True
    """
    map_affine = np.asarray(map_affine, dtype=np.float64)
    source_affine = np.asarray(source_affine, dtype=np.float64)
    if map_affine.shape != (4, 4) or source_affine.shape != (4, 4):
        raise GeometryError(f"affines must be 4x4, got {map_affine.shape} and {source_affine.shape}")
    if np.asarray(map_array).ndim != 3 or len(source_shape) != 3:
        raise GeometryError(
            f"expected 3D map and source shape, got {np.asarray(map_array).shape} and {tuple(source_shape)}"
        )
    if abs(np.linalg.det(map_affine)) < 1e-12:
        raise GeometryError(f"map affine is singular:\n{map_affine}")
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (trilinear), got {order}")
    values = torch.from_numpy(np.ascontiguousarray(map_array, dtype=np.float32))[None]
    shape = tuple(int(s) for s in source_shape)
    mode = "bilinear" if order == 1 else "nearest"
    out = resample_to_grid(values, map_affine, shape, source_affine, mode, fill_background=False)  # type: ignore[arg-type]
    return out[0].numpy()


def save_map_in_source_geometry(
    map_array: np.ndarray,
    map_affine: np.ndarray,
    source: Volume | tuple[tuple[int, ...], np.ndarray],
    path: str | os.PathLike[str],
    map_space: Space = "RAS",
) -> Path:
    """Write a map as NIfTI with exactly the source image's shape and affine.

    Args:
        map_array: ``(D, H, W)`` map on the preprocessed grid.
        map_affine: affine of that grid, in ``map_space``.
        source: the source :class:`Volume`, or ``(shape, affine)`` with a RAS affine.
        path: output ``.nii.gz`` path (written atomically).
        map_space: space of ``map_affine`` (``"RAS"`` or ``"LPS"``).

    Example:
        >>> save_map_in_source_geometry(m.array, grid_affine, volume, "out/gradcam.nii.gz")  # doctest: +SKIP
    """
    if isinstance(source, Volume):
        shape, src_ras = source.shape[:3], source.affine_in("RAS")
    else:
        shape, src_ras = tuple(source[0])[:3], np.asarray(source[1], dtype=np.float64)
    map_ras = Volume(np.zeros((1, 1, 1)), map_affine, map_space).affine_in("RAS")
    resampled = map_to_source_grid(map_array, map_ras, shape, src_ras)
    return save_nifti(resampled, path, affine=src_ras, dtype=np.float32)

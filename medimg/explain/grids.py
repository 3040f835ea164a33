"""Resampling a map between grids: coarser grids under a voxel budget, feature maps onto the input.

Example:
    >>> coarse_shape((256, 256, 128), 1_000_000, multiple=16)
    (112, 112, 48)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def coarse_shape(shape: tuple[int, ...], voxel_budget: int, multiple: int = 1) -> tuple[int, ...]:
    """The spatial shape, shrunk isotropically so that it holds at most ``voxel_budget`` voxels.

    Each side is rounded down to a multiple of ``multiple`` (networks with ``n`` poolings need
    sides divisible by ``2**n``) and is at least ``multiple``.

    Example:
        >>> coarse_shape((256, 256, 128), 1_000_000, multiple=16)
        (112, 112, 48)
    """
    n = int(np.prod(shape))
    if n <= voxel_budget:
        return tuple(shape)
    factor = (voxel_budget / n) ** (1.0 / len(shape))
    return tuple(max(multiple, int(s * factor) // multiple * multiple) for s in shape)


def place_on_grid(
    array: np.ndarray, shape: tuple[int, ...], stride: tuple[float, ...], offset: tuple[float, ...]
) -> np.ndarray:
    """Resample a feature map whose cell ``i`` is centred on input voxel ``stride * i + offset``.

    Linear interpolation along each axis in turn (memory: the output, not a sampling grid);
    voxels beyond the first or last cell centre take that cell's value. With
    ``offset = (stride - 1) / 2`` this is :func:`upsample_to`.

    Example:
        >>> place_on_grid(np.array([[[0.0, 1.0]]]), (1, 1, 4), (1, 1, 2), (0, 0, 0))[0, 0].tolist()
        [0.0, 0.5, 1.0, 1.0]
    """
    out = np.asarray(array, dtype=np.float32)
    for axis, (size, s, o) in enumerate(zip(shape, stride, offset, strict=True)):
        n = out.shape[axis]
        u = np.clip((np.arange(size, dtype=np.float64) - o) / s, 0, n - 1)
        i0 = np.minimum(np.floor(u).astype(np.int64), max(n - 2, 0))
        i1 = np.minimum(i0 + 1, n - 1)
        w = (u - i0).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i1, axis=axis) * w
    return out.astype(np.float32)


def upsample_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample a ``(D, H, W)`` array to ``shape`` trilinearly (voxel centres aligned).

    Example:
        >>> upsample_to(np.ones((2, 2, 2), np.float32), (4, 4, 4)).shape
        (4, 4, 4)
    """
    if tuple(array.shape) == tuple(shape):
        return np.asarray(array, dtype=np.float32)
    t = torch.as_tensor(np.asarray(array, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)
    return out[0, 0].numpy().astype(np.float32)

"""Thick and thin slices: simulating a thick-slice scan from a thin one, and the two grids' affines.

A thick slice ``j`` (``factor`` thin slices thick) covers thin slices ``factor*j ... factor*j +
factor - 1`` along the slice axis, so its centre lies at thin index ``factor*j + (factor-1)/2``.
That one relation gives both affines (``A`` maps voxel indices to mm):

* ``A_thick = A_thin @ T`` with ``T`` the index map thick → thin: along the slice axis
  ``i_thin = factor * j + (factor - 1) / 2``, the other axes unchanged. The slice axis's column of
  the affine grows by ``factor`` (the voxel size along it), the origin moves by ``(factor-1)/2``
  thin slices along it.
* ``A_thin = A_thick @ inv(T)``: ``j = (i_thin - (factor-1)/2) / factor``. The voxel size along the
  slice axis is divided by ``factor`` and the origin moves back by ``(factor-1)/(2*factor)`` of a
  thick slice, so the ``factor`` thin slices of each thick slice are centred on it and tile it.

Both are exact on oblique grids: only the affine's column of the slice axis and its origin change,
along that column's direction.
"""

from __future__ import annotations

from typing import Literal

import numpy as np


def thick_to_thin_index(axis: int, factor: int) -> np.ndarray:
    """The 4x4 map from thin voxel indices to thick voxel indices (``inv(T)`` above).

    Example:
        >>> m = thick_to_thin_index(2, 4)
        >>> (m @ [0, 0, 1.5, 1])[2], (m @ [0, 0, 5.5, 1])[2]
        (np.float64(0.0), np.float64(1.0))
    """
    m = np.eye(4)
    m[axis, axis] = 1.0 / factor
    m[axis, 3] = -(factor - 1) / (2.0 * factor)
    return m


def thick_affine(thin: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """The affine of the thick grid simulated from a thin grid with affine ``thin``.

    Example:
        >>> a = thick_affine(np.eye(4), 2, 4)
        >>> a[2, 2], a[2, 3]
        (np.float64(4.0), np.float64(1.5))
    """
    return np.asarray(thin, np.float64) @ np.linalg.inv(thick_to_thin_index(axis, factor))


def thin_affine(thick: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """The affine of the thin grid (``factor`` slices per thick slice) of a thick grid ``thick``.

    Example:
        >>> a = thin_affine(np.diag([0.7, 0.7, 5.0, 1.0]), 2, 4)
        >>> a[2, 2], a[2, 3]
        (np.float64(1.25), np.float64(-1.875))
    """
    return np.asarray(thick, np.float64) @ thick_to_thin_index(axis, factor)


def crop_to_multiple(data: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Drop trailing slices along ``axis`` so their number is a multiple of ``factor`` (affine unchanged).

    Example:
        >>> crop_to_multiple(np.zeros((3, 3, 10)), 2, 4).shape
        (3, 3, 8)
    """
    n = (data.shape[axis] // factor) * factor
    if n == 0:
        raise ValueError(
            f"{data.shape[axis]} slices along axis {axis}: fewer than one thick slice of {factor}"
        )
    return np.take(data, np.arange(n), axis=axis)


def simulate_thick(
    data: np.ndarray, axis: int, factor: int, profile: Literal["box", "gaussian"] = "box"
) -> np.ndarray:
    """Thick slices from thin ones: the slice profile along ``axis``, sampled at the thick centres.

    ``box``: each thick slice is the mean of its ``factor`` thin slices. ``gaussian``: a Gaussian
    profile with FWHM ``factor`` thin slices, evaluated at the thick slice's centre. ``data`` must
    have a multiple of ``factor`` slices (:func:`crop_to_multiple`).

    Example:
        >>> v = np.arange(8, dtype=float).reshape(1, 1, 8)
        >>> simulate_thick(v, 2, 4).ravel().tolist()
        [1.5, 5.5]
    """
    n = data.shape[axis]
    if n % factor:
        raise ValueError(f"{n} slices along axis {axis} is not a multiple of factor {factor}")
    moved = np.moveaxis(np.asarray(data, np.float32), axis, -1)
    if profile == "box":
        thick = moved.reshape(*moved.shape[:-1], n // factor, factor).mean(-1)
    else:
        from scipy.ndimage import gaussian_filter1d

        blurred = gaussian_filter1d(moved, sigma=factor / 2.3548, axis=-1, mode="nearest")
        centres = factor * np.arange(n // factor) + (factor - 1) / 2.0
        lo = np.floor(centres).astype(int)
        w = (centres - lo).astype(np.float32)
        hi = np.minimum(lo + 1, n - 1)
        thick = blurred[..., lo] * (1 - w) + blurred[..., hi] * w
    return np.moveaxis(thick.astype(np.float32), -1, axis)


def thin_coordinates(n_thick: int, factor: int) -> np.ndarray:
    """Thick-grid index of each of the ``n_thick * factor`` thin slices.

    Example:
        >>> thin_coordinates(2, 2).tolist()
        [-0.25, 0.25, 0.75, 1.25]
    """
    return (np.arange(n_thick * factor) - (factor - 1) / 2.0) / factor


def interpolate_thin(thick: np.ndarray, axis: int, factor: int, order: int = 1) -> np.ndarray:
    """Interpolate a thick scan onto its thin grid along ``axis``: linear (1) or cubic B-spline (3).

    Thin slices beyond the outermost thick centres take the nearest value (``mode="nearest"``).
    Linear along one axis is what trilinear interpolation does on this grid change.

    Example:
        >>> interpolate_thin(np.array([[[0.0, 4.0]]]), 2, 2).ravel().tolist()
        [0.0, 1.0, 3.0, 4.0]
    """
    from scipy.ndimage import map_coordinates

    moved = np.moveaxis(np.asarray(thick, np.float32), axis, -1)
    coords = np.clip(thin_coordinates(moved.shape[-1], factor), 0, moved.shape[-1] - 1)
    if order == 1:
        lo = np.floor(coords).astype(int)
        hi = np.minimum(lo + 1, moved.shape[-1] - 1)
        w = (coords - lo).astype(np.float32)
        out = moved[..., lo] * (1 - w) + moved[..., hi] * w
    else:
        grid = np.meshgrid(*[np.arange(s) for s in moved.shape[:-1]], coords, indexing="ij")
        out = map_coordinates(moved, np.stack(grid), order=order, mode="nearest")
    return np.moveaxis(out.astype(np.float32), -1, axis)

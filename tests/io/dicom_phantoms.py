"""Synthetic phantoms for the DICOM/NIfTI tests: asymmetric, anisotropic, in any orientation."""

from __future__ import annotations

import numpy as np

from medimg.io.volume import Volume

# Row direction, column direction (LPS) of common acquisition planes.
PLANES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
}


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, y, z."""
    a, b, c = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def phantom_data(shape: tuple[int, int, int] = (36, 28, 20), seed: int = 0) -> np.ndarray:
    """Integer HU-like values with no symmetry: a gradient, an off-centre block, a marker voxel."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    data = -1000 + 7 * i + 3 * j * j // 4 + 11 * k
    data[2 : shape[0] // 3, shape[1] // 2 : -2, 1 : shape[2] // 2] += 900
    data[1, 2, min(3, shape[2] - 1)] = 1500
    data = data + rng.integers(0, 5, size=shape)
    return data.astype(np.int16)


def phantom(
    plane: str = "axial",
    shape: tuple[int, int, int] = (36, 28, 20),
    spacing: tuple[float, float, float] = (0.7, 0.9, 2.5),
    oblique: tuple[float, float, float] = (0.0, 0.0, 0.0),
    origin: tuple[float, float, float] = (-40.5, 25.25, 12.0),
    seed: int = 0,
) -> Volume:
    """An LPS :class:`Volume` acquired in ``plane``, optionally rotated by ``oblique`` degrees."""
    row_dir, col_dir = (np.asarray(v, dtype=float) for v in PLANES[plane])
    normal = np.cross(row_dir, col_dir)
    rot = rotation(*oblique)
    aff = np.eye(4)
    aff[:3, 0] = rot @ row_dir * spacing[0]
    aff[:3, 1] = rot @ col_dir * spacing[1]
    aff[:3, 2] = rot @ normal * spacing[2]
    aff[:3, 3] = origin
    return Volume(phantom_data(shape, seed), aff, "LPS")

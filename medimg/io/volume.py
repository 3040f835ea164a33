"""A volume is an array that never travels without its affine and its space."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Space = Literal["RAS", "LPS"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """Voxel data with the affine that maps voxel indices ``(i, j, k)`` to millimetres.

    ``data`` keeps the voxel order of the source (no silent reorientation). It is 3D
    ``(x, y, z)`` or 4D ``(x, y, z, t)`` (time points, diffusion directions, channels);
    the affine is always the 4x4 spatial one, shared by every volume of a 4D array. The
    affine is a 4x4 matrix into the patient space named by ``space``: ``"RAS"``
    (NIfTI / nibabel: +x Right, +y Anterior, +z Superior) or ``"LPS"``
    (DICOM / ITK: +x Left, +y Posterior, +z Superior). ``meta`` holds non-PHI acquisition metadata only.

    Example:
        >>> v = Volume(np.zeros((4, 5, 6), np.float32), np.diag([2.0, 1.0, 3.0, 1.0]))
        >>> v.spacing
        (2.0, 1.0, 3.0)
    """

    data: np.ndarray
    affine: np.ndarray
    space: Space = "RAS"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {self.affine.shape}")
        if self.space not in ("RAS", "LPS"):
            raise ValueError(f"space must be 'RAS' or 'LPS', got {self.space!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def n_volumes(self) -> int:
        """Volumes along the fourth axis (1 for a 3D array)."""
        return int(self.data.shape[3]) if self.data.ndim >= 4 else 1

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def affine_in(self, space: Space) -> np.ndarray:
        """Return the affine expressed in ``space`` (RAS and LPS differ by a flip of x and y)."""
        if space == self.space:
            return self.affine.copy()
        return _RAS_TO_LPS @ self.affine

    def to_space(self, space: Space) -> Volume:
        """The same voxels, with the affine expressed in ``space``."""
        return Volume(self.data, self.affine_in(space), space, dict(self.meta))

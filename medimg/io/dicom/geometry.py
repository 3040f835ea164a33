"""DICOM patient geometry: slice normals, slice ordering, affines in LPS and gantry tilt.

DICOM positions are in LPS millimetres. ``ImageOrientationPatient`` holds the
direction of a row (increasing column index) then of a column (increasing row
index); ``PixelSpacing`` is (between rows, between columns). medimg's voxel
``(i, j, k)`` is column ``i``, row ``j``, slice ``k``, as in ITK and dcm2niix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medimg.errors import DataError

#: Positions closer than this fraction of the slice step count as the same position.
DUPLICATE_TOLERANCE = 0.01
#: A step deviating from the median step by more than this fraction is non-uniform.
SPACING_TOLERANCE = 0.05


def slice_normal(iop: Sequence[float]) -> np.ndarray:
    """Unit normal of the slice plane (row direction x column direction), in LPS.

    Example:
        >>> slice_normal([1, 0, 0, 0, 1, 0]).tolist()
        [0.0, 0.0, 1.0]
    """
    v = np.asarray(iop, dtype=np.float64)
    n = np.cross(v[:3], v[3:])
    norm = float(np.linalg.norm(n))
    if norm < 1e-6:
        raise DataError(f"ImageOrientationPatient {list(v)} has parallel row and column directions")
    return n / norm


def plane_name(iop: Sequence[float], tolerance_deg: float = 1.0) -> str:
    """``"axial"``, ``"coronal"``, ``"sagittal"`` or ``"oblique"`` from the slice normal.

    Example:
        >>> plane_name([0, 1, 0, 0, 0, -1])
        'sagittal'
    """
    n = np.abs(slice_normal(iop))
    axis = int(np.argmax(n))
    if n[axis] < np.cos(np.deg2rad(tolerance_deg)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def orientation_code(affine: np.ndarray, space: str = "RAS") -> str:
    """Three-letter axis code (nibabel convention, e.g. ``"LPS"``) of an affine in ``space``.

    Example:
        >>> orientation_code(np.diag([-1.0, -1.0, 1.0, 1.0]), "RAS")
        'LPS'
    """
    import nibabel as nib

    ras = affine if space == "RAS" else np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    return "".join(nib.aff2axcodes(ras))


@dataclass
class SliceStack:
    """Slices sorted along their normal, with what was found wrong with their spacing."""

    order: np.ndarray  # indices into the input positions, sorted along the normal
    distances: np.ndarray  # position of each sorted slice along the normal (mm)
    step: np.ndarray  # mean slice step vector in LPS (mm), from first to last slice
    normal: np.ndarray
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # input index pairs
    missing: int = 0  # slices missing according to the median step
    nonuniform: bool = False
    tilt_deg: float = 0.0  # angle between the slice step and the normal (gantry tilt)

    @property
    def flags(self) -> list[str]:
        """QA flag names for what was found (empty when the stack is clean)."""
        out = []
        if self.duplicates:
            out.append("duplicate_positions")
        if self.missing:
            out.append("missing_slices")
        if self.nonuniform:
            out.append("nonuniform_spacing")
        if self.tilt_deg > 0.01:
            out.append("gantry_tilt")
        return out


def sort_slices(positions: np.ndarray, iop: Sequence[float]) -> SliceStack:
    """Sort slice positions (N x 3, LPS) along the slice normal and check their spacing.

    Never uses file names or InstanceNumber: only ImagePositionPatient projected on
    the normal. Duplicate positions, missing slices, non-uniform steps and gantry
    tilt are reported in the result, not silently fixed.

    Example:
        >>> stack = sort_slices(np.array([[0, 0, 5.0], [0, 0, 0.0], [0, 0, 2.5]]), [1, 0, 0, 0, 1, 0])
        >>> stack.order.tolist(), stack.step.tolist()
        ([1, 2, 0], [0.0, 0.0, 2.5])
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    normal = slice_normal(iop)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    d = dist[order]
    stack = SliceStack(order=order, distances=d, step=np.array([0.0, 0.0, 1.0]), normal=normal)
    if len(pos) < 2:
        return stack
    gaps = np.diff(d)
    positive = gaps[gaps > 1e-6]
    median = float(np.median(positive)) if positive.size else 0.0
    dup_tol = max(median * DUPLICATE_TOLERANCE, 1e-4)
    stack.duplicates = [(int(order[i]), int(order[i + 1])) for i in np.nonzero(gaps <= dup_tol)[0]]
    if median > 0:
        real = gaps[gaps > dup_tol]
        ratio = real / median
        stack.missing = int(np.sum(np.maximum(np.rint(ratio) - 1, 0)))
        stack.nonuniform = bool(np.any(np.abs(ratio - np.rint(ratio)) > SPACING_TOLERANCE))
        first, last = pos[order[0]], pos[order[-1]]
        stack.step = (last - first) / (len(pos) - 1)
        cos = abs(float(stack.step @ normal)) / max(float(np.linalg.norm(stack.step)), 1e-12)
        stack.tilt_deg = float(np.rad2deg(np.arccos(min(1.0, cos))))
    return stack


def affine_lps(
    iop: Sequence[float], pixel_spacing: Sequence[float], origin: Sequence[float], step: np.ndarray
) -> np.ndarray:
    """4x4 affine mapping voxel ``(column, row, slice)`` to LPS mm.

    ``step`` is the vector between consecutive slices (it may be sheared for a
    gantry-tilted series; the affine then reproduces every slice position exactly).

    Example:
        >>> affine_lps([1, 0, 0, 0, 1, 0], [0.5, 0.8], [10, 20, 30], np.array([0, 0, 2.0]))[:3, :3].tolist()
        [[0.8, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 2.0]]
    """
    v = np.asarray(iop, dtype=np.float64)
    row_spacing, col_spacing = float(pixel_spacing[0]), float(pixel_spacing[1])
    aff = np.eye(4)
    aff[:3, 0] = v[:3] * col_spacing
    aff[:3, 1] = v[3:] * row_spacing
    aff[:3, 2] = np.asarray(step, dtype=np.float64)
    aff[:3, 3] = np.asarray(origin, dtype=np.float64)
    return aff

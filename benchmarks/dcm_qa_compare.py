"""Is a medimg volume the same image as a dcm2niix reference NIfTI? One verdict with a reason.

Both images are first put in the closest RAS axis order (a permutation and flips of
the voxel axes, with the affine updated to match; nibabel's
``as_closest_canonical``), since medimg keeps the DICOM voxel order and dcm2niix
flips rows. Then, in this order: the number of volumes (4D), the voxel grid
(shape), the affine (1e-3 mm; beyond that, up to 1e-2 mm, only as far as float32
rounding of the reference's affine explains it, flagged ``loose``) and the voxel values
(equal within the reference's rescale quantisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

AFFINE_TOL_MM = 1e-3
AFFINE_LOOSE_MM = 1e-2
FLOAT32_ULPS = 8  # float32 rounding steps dcm2niix's affine arithmetic may accumulate
CATEGORIES = ("matched", "4D", "shape", "affine", "values")


@dataclass
class Image:
    """Voxels (x, y, z[, t]) with a RAS affine, and the scale the values were stored with."""

    data: np.ndarray
    affine: np.ndarray
    slope: float = 1.0
    stored_integers: bool = False
    header_error_mm: float = 0.0  # how precisely the file's header can hold the affine


@dataclass
class Verdict:
    """``category`` is ``matched`` or the first check that failed; ``detail`` says by how much."""

    category: str
    detail: str = ""
    affine_diff_mm: float = float("nan")
    value_diff: float = float("nan")
    loose: bool = False

    @property
    def ok(self) -> bool:
        return self.category == "matched"

    @property
    def stage(self) -> int:
        """How far the comparison got (higher: closer to a match); used to report the nearest miss."""
        return CATEGORIES[::-1].index(self.category) if self.category in CATEGORIES else -1


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``data`` and ``affine`` with the voxel axes permuted/flipped to the closest RAS order.

    Example:
        >>> d, a = canonical(np.arange(8.0).reshape(2, 2, 2), np.diag([-1.0, 1, 1, 1]))
        >>> float(a[0, 0]), float(d[0, 0, 0])
        (1.0, 4.0)
    """
    ornt = io_orientation(affine)
    out = apply_orientation(data, ornt)
    return out, affine @ inv_ornt_aff(ornt, data.shape[:3])


def n_volumes(data: np.ndarray) -> int:
    """Number of 3D volumes: the product of the axes after the third (1 for a 3D image)."""
    return int(np.prod(data.shape[3:])) if data.ndim > 3 else 1


def read_reference(path: str) -> Image:
    """A dcm2niix NIfTI as float32 values (scaling applied), its sform in RAS, and its precision."""
    import nibabel as nib

    img = nib.load(path)
    header = img.header
    slope = float(getattr(img.dataobj, "slope", 1.0))  # nibabel moves scl_slope into the array proxy
    slope = slope if np.isfinite(slope) and slope != 0 else 1.0
    stored = np.dtype(header.get_data_dtype())
    if stored.fields:  # RGB24: one axis more, of the three channels
        from numpy.lib.recfunctions import structured_to_unstructured

        data = structured_to_unstructured(np.asarray(img.dataobj)).astype(np.float32)
    else:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    affine = np.asarray(img.affine, dtype=np.float64)
    # dcm2niix computes the affine in float32 and stores it so: a few units in the last place of
    # its largest entry is what rounding can explain (a sheared qform is no measure of precision)
    header_error = FLOAT32_ULPS * float(np.spacing(np.float32(np.abs(affine[:3]).max())))
    return Image(data, affine, slope, stored.kind in "iu", header_error)


def compare(ref: Image, got: Image) -> Verdict:
    """Compare a reference image with a medimg image (both with RAS affines).

    Example:
        >>> a = Image(np.ones((2, 3, 4), np.float32), np.eye(4))
        >>> compare(a, a).category
        'matched'
    """
    if n_volumes(ref.data) != n_volumes(got.data):
        return Verdict(
            "4D",
            f"reference has {n_volumes(ref.data)} volume(s) of {ref.data.shape[:3]}, "
            f"medimg {n_volumes(got.data)} of {got.data.shape[:3]}",
        )
    rd, ra = canonical(ref.data, ref.affine)
    gd, ga = canonical(got.data, got.affine)
    if rd.shape[:3] != gd.shape[:3]:
        return Verdict("shape", f"reference {rd.shape[:3]}, medimg {gd.shape[:3]} (RAS order)")
    diff = float(np.abs(ra[:3] - ga[:3]).max())
    loose = diff > AFFINE_TOL_MM
    if loose and not (diff <= AFFINE_LOOSE_MM and diff <= ref.header_error_mm + AFFINE_TOL_MM):
        return Verdict("affine", f"affines differ by up to {diff:.4g} mm", affine_diff_mm=diff)
    rd = rd.reshape(rd.shape[:3] + (-1,))
    gd = gd.reshape(gd.shape[:3] + (-1,))
    tol = (0.5 * abs(ref.slope) if ref.stored_integers and ref.slope != 1.0 else 0.0) + 1e-5 * max(
        1.0, float(np.abs(rd).max(initial=0.0))
    )
    delta = np.abs(rd.astype(np.float64) - gd.astype(np.float64))
    worst = float(delta.max(initial=0.0))
    if worst > tol:
        bad = int(np.count_nonzero(delta > tol))
        return Verdict(
            "values",
            f"{bad} of {delta.size} voxels differ (max {worst:.4g}, tolerance {tol:.3g})",
            affine_diff_mm=diff,
            value_diff=worst,
        )
    note = (
        f"affine within {diff:.2g} mm (float32 rounding of the reference explains {ref.header_error_mm:.2g} mm)"
        if loose
        else ""
    )
    return Verdict("matched", note, affine_diff_mm=diff, value_diff=worst, loose=loose)

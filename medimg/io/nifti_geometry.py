"""The geometry a NIfTI header promises, checked before any voxel is used.

A NIfTI file carries up to two affines: the *qform* (a rotation, voxel sizes ``pixdim``
and an offset) and the *sform* (a general 4x4). nibabel picks the sform when its code
is set and otherwise the qform, with only a warning for broken values (``pixdim`` 0
becomes 1 mm: volumes then come out wrong by the missing factor). medimg refuses:

* ``pixdim`` 0, negative or not finite on a spatial axis;
* an affine that is singular (a zero-volume voxel) or holds NaN/inf;
* a qform and an sform that are both set and disagree by more than ``QS_TOLERANCE_MM``,
  unless the policy says which one to trust (``"sform"`` or ``"qform"``); the choice is
  recorded in the volume's ``qa_flags``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from medimg.errors import GeometryError

AffinePolicy = Literal["refuse", "sform", "qform"]
AFFINE_POLICIES: tuple[str, ...] = ("refuse", "sform", "qform")
QS_TOLERANCE_MM = 1e-3


def check_pixdim(header: Any, path: Path) -> None:
    """Refuse a voxel size that is 0, negative or not finite on one of the spatial axes.

    Example:
        >>> import nibabel as nib
        >>> h = nib.Nifti1Header(); h.set_data_shape((2, 2, 2)); h["pixdim"][1:4] = (1, 1, 2)
        >>> check_pixdim(h, Path("ok.nii"))
    """
    n = min(3, len(header.get_data_shape()))
    pixdim = np.asarray(header["pixdim"][1 : 1 + n], dtype=np.float64)
    bad = [i for i, v in enumerate(pixdim) if not np.isfinite(v) or v <= 0]
    if bad:
        raise GeometryError(
            f"{path}: voxel size pixdim[1:{n + 1}] = {tuple(round(float(v), 6) for v in pixdim)} has a zero, negative "
            f"or non-finite value on axis {bad[0]}; expected positive sizes in mm (fix the header)"
        )


def check_affine(affine: np.ndarray, path: Path, which: str = "affine") -> None:
    """Refuse an affine with NaN/inf or a singular 3x3 part (voxels of no volume)."""
    a = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(a).all():
        raise GeometryError(f"{path}: the {which} holds NaN/inf; expected a finite voxel-to-mm matrix")
    det = float(np.linalg.det(a[:3, :3]))
    scale = float(np.prod(np.linalg.norm(a[:3, :3], axis=0))) or 1.0
    if abs(det) <= 1e-6 * scale:
        raise GeometryError(
            f"{path}: the {which} is singular (determinant {det:.3g}); its voxels have no volume, "
            "so no position in mm can be computed (fix the header's srow/quatern fields)"
        )


def choose_affine(header: Any, path: Path, policy: str = "refuse") -> tuple[np.ndarray, list[str]]:
    """The affine to use for ``header`` and the QA flags that say how it was chosen.

    Args:
        header: a nibabel NIfTI-1/2 header.
        path: the file, named in errors.
        policy: what to do when qform and sform are both set and disagree: ``"refuse"``
            (the default), or trust ``"sform"`` / ``"qform"``.

    Raises:
        GeometryError: a singular affine, or disagreeing qform/sform under ``"refuse"``.

    Example:
        >>> import nibabel as nib
        >>> img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.diag([1.0, 2.0, 3.0, 1.0]))
        >>> affine, flags = choose_affine(img.header, Path("x.nii"))
        >>> np.diag(affine).tolist(), flags
        ([1.0, 2.0, 3.0, 1.0], [])
    """
    if policy not in AFFINE_POLICIES:
        raise ValueError(f"affine policy {policy!r}: expected one of {AFFINE_POLICIES}")
    q_code, s_code = int(header["qform_code"]), int(header["sform_code"])
    flags: list[str] = []
    if q_code > 0 and s_code > 0:
        qform, sform = header.get_qform(), header.get_sform()
        check_affine(sform, path, "sform")
        diff = float(np.abs(qform - sform).max())
        if diff > QS_TOLERANCE_MM:
            if policy == "refuse":
                raise GeometryError(
                    f"{path}: qform and sform disagree by up to {diff:.4g} mm (tolerance {QS_TOLERANCE_MM}); "
                    "medimg will not guess which is right: fix the header, or choose one with "
                    "data.nifti_affine: sform|qform"
                )
            flags.append(f"qform_sform_differ_{diff:.3g}mm_used_{policy}")
            affine = sform if policy == "sform" else qform
        else:
            affine = sform
    elif s_code > 0:
        affine = header.get_sform()
    elif q_code > 0:
        affine = header.get_qform()
    else:
        affine = header.get_base_affine()
        flags.append("no_orientation_codes")
    check_affine(affine, path)
    return np.asarray(affine, dtype=np.float64), flags


def form_codes(header: Any) -> dict[str, int]:
    """The header's ``qform_code`` and ``sform_code``, kept so outputs can carry them on."""
    return {"qform_code": int(header["qform_code"]), "sform_code": int(header["sform_code"])}

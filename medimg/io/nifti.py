"""NIfTI reading and writing that keep the affine exactly and never write half a file."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from medimg.errors import DataError
from medimg.io.atomic import atomic_write
from medimg.io.volume import Volume


def load_nifti(path: str | os.PathLike[str], dtype: np.dtype | type | None = None) -> Volume:
    """Load a NIfTI file as a :class:`Volume` in RAS with its exact affine.

    Truncated or corrupt files raise :class:`DataError` naming the file (nibabel
    would otherwise fail lazily, deep inside a data loader).

    Example:
        >>> vol = load_nifti("case_000/image.nii.gz")  # doctest: +SKIP
        >>> vol.shape, vol.spacing  # doctest: +SKIP
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found (expected a NIfTI image .nii or .nii.gz)")
    try:
        img = nib.load(str(p))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for bad files
        raise DataError(f"{p}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    affine = img.affine if img.affine is not None else np.eye(4)
    meta = {"source": p.name, "zooms": tuple(float(z) for z in img.header.get_zooms()[:3])}
    return Volume(data, np.asarray(affine, dtype=np.float64), "RAS", meta)


def save_nifti(
    volume: Volume | np.ndarray,
    path: str | os.PathLike[str],
    affine: np.ndarray | None = None,
    dtype: np.dtype | type | None = None,
) -> Path:
    """Write a volume (or an array plus ``affine``) to NIfTI atomically.

    Both the sform and qform carry the affine, so viewers agree; their codes are the source's
    (``meta["qform_code"]``/``meta["sform_code"]`` of a NIfTI input), else 1 (scanner).
    A 4D volume ``(x, y, z, t)`` keeps its spatial affine; units are mm and
    seconds, and ``pixdim[4]`` is the repetition time when ``meta`` has
    ``RepetitionTime`` (seconds, as in a BIDS sidecar), else 1.

    Example:
        >>> save_nifti(vol, "out/mask.nii.gz", dtype=np.uint8)  # doctest: +SKIP
    """
    codes = {"qform_code": 1, "sform_code": 1}
    if isinstance(volume, Volume):
        data, aff = volume.data, volume.affine_in("RAS")
        codes.update({k: int(volume.meta[k]) for k in codes if k in volume.meta})
    else:
        if affine is None:
            raise ValueError("save_nifti needs an affine when given a bare array")
        data, aff = np.asarray(volume), np.asarray(affine, dtype=np.float64)
    if dtype is not None:
        data = np.asarray(data).astype(dtype, copy=False)
    img = nib.Nifti1Image(data, aff)
    img.set_sform(aff, code=codes["sform_code"])
    img.set_qform(aff, code=codes["qform_code"])
    if np.ndim(data) >= 4:
        tr = volume.meta.get("RepetitionTime") if isinstance(volume, Volume) else None
        zooms = list(img.header.get_zooms())
        zooms[3] = float(tr) if isinstance(tr, (int, float)) and tr > 0 else 1.0
        img.header.set_zooms(zooms)
        img.header.set_xyzt_units("mm", "sec")
    else:
        img.header.set_xyzt_units("mm")
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)

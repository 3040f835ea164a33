"""A MONAI ``ImageReader`` for NIfTI files and DICOM series folders, through :func:`load_image`.

With it, a manifest row's ``image`` may be a DICOM series folder (or
``folder#series_key``) as well as a ``.nii.gz``: no conversion step. The data keep
their source voxel order and the ``affine`` is in RAS, as MONAI's NibabelReader
and ITKReader (``affine_lps_to_ras=True``) give it, so ``Orientationd``/``Spacingd``
and saving back into the scan's geometry work unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data.image_reader import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from medimg.io.load import is_nifti, load_image
from medimg.io.volume import Volume


class MedimgImageReader(ImageReader):
    """Read NIfTI files and DICOM series folders for ``LoadImage(d)`` with strict checks.

    Args:
        spacing_policy, tilt_policy: passed to :func:`medimg.io.load.load_image` for DICOM series.
        dtype: voxel type of the returned array.
        nonfinite: ``"refuse"`` NaN/inf voxels (the default, naming the file) or ``"zero"``
            them; the number replaced is kept in the metadata as ``nonfinite_zeroed``.
        affine_policy: NIfTI qform/sform disagreement: ``"refuse"``, ``"sform"`` or ``"qform"``.

    Use it as the only reader (:class:`medimg.data.loading.LoadStrictd` does): MONAI's
    ``LoadImage`` otherwise falls back to its own readers when this one refuses a file.

    Example:
        >>> from monai.transforms import LoadImaged
        >>> load = LoadImaged(keys="image", reader=MedimgImageReader(), ensure_channel_first=True)
        >>> sample = load({"image": "study/ct"})  # doctest: +SKIP
        >>> sample["image"].affine  # RAS, like NibabelReader  # doctest: +SKIP
    """

    def __init__(
        self,
        spacing_policy: str = "refuse",
        tilt_policy: str = "keep",
        dtype: Any = np.float32,
        nonfinite: str = "refuse",
        affine_policy: str = "refuse",
    ) -> None:
        super().__init__()
        self.spacing_policy = spacing_policy
        self.tilt_policy = tilt_policy
        self.dtype = dtype
        self.nonfinite = nonfinite
        self.affine_policy = affine_policy

    def verify_suffix(self, filename: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> bool:
        """True for ``.nii``/``.nii.gz`` files and for folders (optionally ``folder#series_key``)."""
        for name in ensure_tuple(filename):
            text = str(name)
            if not (is_nifti(text) or Path(text.split("#", 1)[0]).is_dir()):
                return False
        return True

    def read(self, data: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], **kwargs: Any) -> Any:
        """Load each path as a :class:`Volume` (a list when several are given)."""
        volumes = [
            load_image(
                str(name),
                spacing_policy=self.spacing_policy,  # type: ignore[arg-type]
                tilt_policy=self.tilt_policy,  # type: ignore[arg-type]
                allow_nonfinite=self.nonfinite == "zero",
                affine_policy=self.affine_policy,
            )
            for name in ensure_tuple(data)
        ]
        for vol in volumes:  # a plain string reaches MONAI's metadata (lists do not)
            vol.meta["qa"] = ";".join(vol.meta.get("qa_flags", []))
        if self.nonfinite == "zero":
            for vol in volumes:
                bad = ~np.isfinite(vol.data)
                vol.meta["nonfinite_zeroed"] = int(bad.sum())
                if vol.meta["nonfinite_zeroed"]:
                    vol.data = np.where(bad, 0, vol.data).astype(vol.data.dtype)
        self._names = [str(n) for n in ensure_tuple(data)]
        return volumes if len(volumes) > 1 else volumes[0]

    def get_data(self, img: Volume | Sequence[Volume]) -> tuple[np.ndarray, dict]:
        """Array (several files stacked on a new first axis) and MONAI metadata with a RAS affine."""
        volumes = list(img) if isinstance(img, (list, tuple)) else [img]
        arrays = [np.asarray(v.data, dtype=self.dtype) for v in volumes]
        first = volumes[0]
        affine = first.affine_in("RAS")
        meta: dict[str, Any] = {
            MetaKeys.AFFINE: affine.copy(),
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(first.shape[:3]),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if first.data.ndim == 3 else -1,
            "pixdim": np.asarray([1.0, *first.spacing, *([1.0] * 4)])[:8],
        }
        meta.update({k: v for k, v in first.meta.items() if isinstance(v, (str, int, float))})
        if len(arrays) > 1:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
            return np.stack(arrays, axis=0), meta
        return arrays[0], meta

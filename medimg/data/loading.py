"""medimg's one way to load images into a MONAI pipeline, and the way back to its errors.

MONAI's ``LoadImaged(reader=...)`` keeps its own readers (NibabelReader, ITKReader,
PydicomReader) behind the one it is given and silently falls back to them when it
refuses a file: a series with a missing slice, two patients' series in one folder or a
NaN volume would then be read anyway, on an invented grid. :class:`LoadStrictd` hands
every file to :class:`medimg.io.reader.MedimgImageReader` and to nothing else, so what
``medimg convert`` refuses, training, ``predict``, ``explain`` and ``evaluate`` refuse
with the same words.

MONAI wraps an error raised inside a transform in ``RuntimeError("applying transform
<...>")``; :func:`medimg.errors.find_medimg_error` and :func:`raise_medimg_cause` find the medimg error in
that chain so that a case records why it failed, not which transform did.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.transforms import LoadImaged, MapTransform

from medimg.errors import DataError, find_medimg_error
from medimg.io.reader import MedimgImageReader


class LoadStrictd(LoadImaged):
    """``LoadImaged`` that reads with medimg's strict reader only (no fallback readers).

    Args:
        keys: dictionary keys holding paths (NIfTI files, DICOM folders, ``folder#series_key``).
        nonfinite: ``"refuse"`` (default) or ``"zero"`` NaN/inf voxels (``data.nonfinite``).
        affine_policy: NIfTI qform/sform disagreement (``data.nifti_affine``).
        spatial_dims: dimensions every image must have (3: one channel of a 3D volume).

    Example:
        >>> load = LoadStrictd(keys="image")
        >>> load({"image": "study/ct"})["image"].affine  # doctest: +SKIP
    """

    def __init__(
        self,
        keys: Any,
        nonfinite: str = "refuse",
        affine_policy: str = "refuse",
        spatial_dims: int | None = 3,
        image_channels: int = 1,
    ) -> None:
        self.strict_reader = MedimgImageReader(nonfinite=nonfinite, affine_policy=affine_policy)
        super().__init__(keys=keys, reader=self.strict_reader, image_only=True)
        self.spatial_dims = spatial_dims
        self.image_channels = image_channels

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        """Load each key with the strict reader; a reader given here is ignored."""
        d = super().__call__(data, self.strict_reader)  # a runtime reader: LoadImage tries no other
        if self.spatial_dims is not None:
            for key in self.key_iterator(d):
                channels = self.image_channels if key == "image" else 1
                check_channels(str(data[key]), tuple(d[key].shape), self.spatial_dims, channels)
        return d


def check_channels(name: str, shape: tuple[int, ...], spatial_dims: int, channels: int) -> None:
    """Refuse an image that is not ``spatial_dims``-D with ``channels`` volumes on its last axis.

    A 4D image (multi-echo, multi-contrast) is read as channels only when the workflow says how
    many (``data.channels``); one more or fewer volume is an error, never a silent crop.

    Example:
        >>> check_channels("me.nii.gz", (64, 64, 30, 3), 3, 3)
        >>> check_channels("ct.nii.gz", (64, 64, 30), 3, 1)
    """
    if channels == 1 and (len(shape) == spatial_dims or (len(shape) == spatial_dims + 1 and shape[-1] == 1)):
        return
    if channels > 1 and len(shape) == spatial_dims + 1 and shape[-1] == channels:
        return
    if channels == 1:
        expected = (
            f"a {spatial_dims}D volume (set data.channels: N to read a 4D image's N volumes as channels)"
        )
    else:
        expected = (
            f"a {spatial_dims}D volume with {channels} volumes on a 4th axis (data.channels: {channels})"
        )
    raise DataError(f"{name}: image has {len(shape)} dimensions {shape}; expected {expected}")


class CheckLabelValuesd(MapTransform):
    """Refuse a label volume holding a value that is not one of ``data.labels`` (or not whole).

    A stray value (255 for "ignore", 3 in a 3-label study) would otherwise reach the loss as
    an out-of-range class index and end in a raw device assertion, mid-epoch.

    Example:
        >>> import numpy as np, torch
        >>> check = CheckLabelValuesd("label", allowed=(0, 1, 2))
        >>> _ = check({"label": torch.tensor(np.array([[0.0, 2.0]]))})
    """

    def __init__(self, keys: Any, allowed: Any) -> None:
        super().__init__(keys)
        self.allowed = sorted(int(v) for v in allowed)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            bad = label_values_outside(np.asarray(d[key]), self.allowed)
            if bad:
                name = getattr(d[key], "meta", {}).get("filename_or_obj", key)
                raise DataError(
                    f"{name}: label value(s) {bad[:5]} not in data.labels {self.allowed}; "
                    "add them to data.labels or fix the mask"
                )
        return d


def label_values_outside(array: np.ndarray, allowed: Any) -> list[float]:
    """The distinct values of ``array`` that are not whole numbers in ``allowed`` (sorted).

    Example:
        >>> label_values_outside(np.array([0, 1, 3, 3]), [0, 1, 2])
        [3.0]
    """
    values = np.unique(array)
    ok = set(int(v) for v in allowed)
    return [float(v) for v in values if not (float(v).is_integer() and int(v) in ok)]


def raise_medimg_cause(exc: BaseException) -> None:
    """Re-raise the medimg error inside ``exc`` (so its message is what users read); else return.

    Call it in an ``except`` block, then ``raise`` to keep other errors as they were.
    """
    cause = find_medimg_error(exc)
    if cause is not None and cause is not exc:
        raise cause.with_traceback(None) from None

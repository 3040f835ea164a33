"""MONAI transform pipelines built from a workflow.

Two halves, as MONAI's CacheDataset expects: the deterministic half (load, orient,
resample, normalise, crop) is computed once and cached; the random half (patches,
flips, affine and intensity augmentation) runs every epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai import transforms as T
from nibabel.orientations import aff2axcodes

from medimg.config.schema import Workflow
from medimg.data.loading import CheckLabelValuesd, LoadStrictd, raise_medimg_cause
from medimg.tasks import get_task

AXES = (("L", "R"), ("P", "A"), ("I", "S"))


class Orientd(T.Orientationd):
    """``Orientationd`` that passes a case already in the target orientation through untouched.

    MONAI's transform re-derives the (identity) reorientation, copies and records it per case:
    about 0.9 ms per small case, a quarter of the caching time of 1,000 32^3 volumes. A case
    whose every key's affine already has ``axcodes`` is returned as it is (the same voxels and
    affine Orientationd would give).
    """

    def __call__(self, data: Any, lazy: bool | None = None) -> Any:
        target = tuple(self.ornt_transform.axcodes)
        for key in self.key_iterator(dict(data)):
            affine = getattr(data[key], "affine", None)
            if affine is None or tuple(affine.shape) != (4, 4):
                return super().__call__(data, lazy)
            if aff2axcodes(np.asarray(affine), labels=AXES) != target:
                return super().__call__(data, lazy)
        return dict(data)


class ResizeToSized(T.ResizeWithPadOrCropd):
    """``ResizeWithPadOrCropd`` that passes a case already of ``spatial_size`` through untouched.

    Padding or cropping to the size a case already has changes nothing but costs MONAI's
    bookkeeping (about 1 ms per small case).
    """

    def __init__(self, keys: Any, spatial_size: Any, **kwargs: Any) -> None:
        super().__init__(keys=keys, spatial_size=spatial_size, **kwargs)
        self.size = tuple(int(v) for v in spatial_size)

    def __call__(self, data: Any, lazy: bool | None = None) -> Any:
        for key in self.key_iterator(dict(data)):
            shape = tuple(data[key].shape[1:])
            if len(shape) != len(self.size) or any(
                want > 0 and got != want for got, want in zip(shape, self.size, strict=True)
            ):
                return super().__call__(data, lazy)
        return dict(data)


def deterministic_transforms(wf: Workflow, keys: tuple[str, ...], with_label: bool) -> list[Any]:
    """Load → channel first → orientation → spacing → intensity → crop/resize.

    ``keys`` are the dictionary keys holding images (``("image", "label")`` for segmentation).

    Example:
        >>> ts = deterministic_transforms(wf, ("image", "label"), with_label=True)  # doctest: +SKIP
    """
    pp = wf.preprocessing
    modes = ("bilinear", "nearest") if with_label else ("bilinear",)
    ts: list[Any] = [  # medimg's strict reader only: NIfTI files and DICOM series folders, geometry checked
        LoadStrictd(
            keys=keys,
            nonfinite=wf.data.nonfinite,
            affine_policy=wf.data.nifti_affine,
            image_channels=wf.data.channels,
        ),
    ]
    if with_label and wf.data.labels:
        ts.append(CheckLabelValuesd(keys="label", allowed=wf.data.labels))
    ts += [
        T.EnsureChannelFirstd(keys=keys),
        T.EnsureTyped(keys=keys, dtype="float32", track_meta=True),
        Orientd(keys=keys, axcodes=pp.orientation, labels=AXES),
    ]
    if pp.spacing is not None:
        ts.append(T.Spacingd(keys=keys, pixdim=pp.spacing, mode=modes))
    ic = pp.intensity
    if ic.mode == "zscore":
        ts.append(T.NormalizeIntensityd(keys="image", nonzero=ic.nonzero, channel_wise=True))
    elif ic.mode == "ct_window":
        ts.append(
            T.ScaleIntensityRanged(
                keys="image", a_min=ic.window[0], a_max=ic.window[1], b_min=0.0, b_max=1.0, clip=True
            )
        )
    elif ic.mode == "clip_zscore":
        ts += clip_zscore(ic.window, ic.stats)
    elif ic.mode == "minmax":
        ts.append(T.ScaleIntensityd(keys="image"))
    if pp.crop_foreground:
        ts.append(T.CropForegroundd(keys=keys, source_key="image", allow_smaller=True))
    if pp.spatial_size is not None:
        ts.append(ResizeToSized(keys=keys, spatial_size=pp.spatial_size))
    if with_label and wf.augmentation.patch_size is not None:
        ts.append(T.SpatialPadd(keys=keys, spatial_size=wf.augmentation.patch_size))
    return ts


def clip_zscore(window: tuple[float, float], stats: tuple[float, float] | None) -> list[Any]:
    """Clip to ``window``, then z-score with the dataset's ``stats`` (mean, std) or each case's own.

    With ``stats`` it is one linear map with clipping (nnU-Net's CT normalisation).

    Example:
        >>> [type(t).__name__ for t in clip_zscore((-100.0, 300.0), (50.0, 100.0))]
        ['ScaleIntensityRanged']
    """
    lo, hi = window
    if stats is None:
        return [
            T.ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=lo, b_max=hi, clip=True),
            T.NormalizeIntensityd(keys="image", channel_wise=True),
        ]
    mean, std = stats
    std = std if std > 0 else 1.0
    return [
        T.ScaleIntensityRanged(
            keys="image", a_min=lo, a_max=hi, b_min=(lo - mean) / std, b_max=(hi - mean) / std, clip=True
        )
    ]


def random_transforms(wf: Workflow, keys: tuple[str, ...], with_label: bool) -> list[Any]:
    """Patch sampling (segmentation) and spatial/intensity augmentation.

    Example:
        >>> ts = random_transforms(wf, ("image", "label"), with_label=True)  # doctest: +SKIP
    """
    aug = wf.augmentation
    ts: list[Any] = []
    if with_label and aug.patch_size is not None:
        n = aug.samples_per_volume
        ts.append(
            T.RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=aug.patch_size,
                pos=aug.pos_fraction,
                neg=1.0 - aug.pos_fraction,
                num_samples=n,
                image_key="image",
                image_threshold=-1e9,
                allow_smaller=True,
                fg_indices_key=FG_INDICES,
                bg_indices_key=BG_INDICES,
            )
        )
    if aug.flip_prob > 0:
        ts += [T.RandFlipd(keys=keys, prob=aug.flip_prob, spatial_axis=a) for a in range(3)]
    if aug.spatial.prob > 0:
        rad = aug.spatial.rotate_deg * 3.141592653589793 / 180
        ts.append(
            T.RandAffined(
                keys=keys,
                prob=aug.spatial.prob,
                rotate_range=(rad, rad, rad),
                scale_range=(aug.spatial.scale,) * 3,
                padding_mode="border",
                mode=("bilinear", "nearest") if with_label else "bilinear",
            )
        )
    ia = aug.intensity
    if ia.prob > 0 and ia.scale > 0:
        ts.append(T.RandScaleIntensityd(keys="image", factors=ia.scale, prob=ia.prob))
    if ia.prob > 0 and ia.shift > 0:
        ts.append(T.RandShiftIntensityd(keys="image", offsets=ia.shift, prob=ia.prob))
    if ia.noise_std > 0:
        ts.append(T.RandGaussianNoised(keys="image", std=ia.noise_std, prob=ia.prob))
    return ts


def patch_index_transforms(wf: Workflow, with_label: bool) -> list[Any]:
    """Foreground/background voxel indices for patch sampling, computed once with the cached half.

    MONAI's ``RandCropByPosNegLabeld`` otherwise scans the whole label every epoch to find
    them (about a quarter of a second per quickstart case); with the indices cached, the
    random crop only draws from them (``benchmarks/bench_train.py`` measures the gain). The
    crop pops both keys, so they never reach the batch.

    Example:
        >>> ts = patch_index_transforms(wf, with_label=True)  # doctest: +SKIP
    """
    if not with_label or wf.augmentation.patch_size is None:
        return []
    return [
        T.FgBgToIndicesd(
            keys="label",
            fg_postfix="_fg_indices",
            bg_postfix="_bg_indices",
            image_key="image",
            image_threshold=-1e9,
        )
    ]


FG_INDICES, BG_INDICES = "label_fg_indices", "label_bg_indices"


def train_transforms(wf: Workflow) -> T.Compose:
    """The full training pipeline (deterministic half first, then random half)."""
    seg = get_task(wf.task).dense
    keys = ("image", "label") if seg else ("image",)
    return T.Compose(
        deterministic_transforms(wf, keys, seg)
        + patch_index_transforms(wf, seg)
        + random_transforms(wf, keys, seg)
    )


def eval_transforms(wf: Workflow, with_label: bool = True) -> T.Compose:
    """Deterministic pipeline for validation and prediction (no patches, no augmentation)."""
    seg = get_task(wf.task).dense and with_label
    keys = ("image", "label") if seg else ("image",)
    ts = deterministic_transforms(wf, keys, seg)
    if not seg:
        ts = [t for t in ts if not isinstance(t, T.SpatialPadd)]
    return T.Compose(ts)


def preprocess_image(wf: Workflow, path: str, transform: T.Compose | None = None) -> dict[str, Any]:
    """One image through the workflow's deterministic pipeline, as validation saw it (no label).

    The one preprocessing for inference: the predictor and a loaded model's ``preprocess`` both
    call it. ``transform`` is :func:`eval_transforms` built once by a caller that reuses it.

    Returns:
        MONAI's dictionary; ``image`` is a MetaTensor carrying the grid affine and the source
        image's ``original_affine`` and ``spatial_shape``.

    Raises:
        MedimgError: the image is refused by medimg's reader (the reason ``medimg convert``
            gives), not MONAI's "applying transform" wrapper.

    Example:
        >>> item = preprocess_image(wf, "scan.nii.gz")  # doctest: +SKIP
        >>> item["image"].shape  # doctest: +SKIP
        torch.Size([1, 96, 96, 64])
    """
    try:
        return (transform or eval_transforms(wf, with_label=False))({"image": path})
    except Exception as exc:
        raise_medimg_cause(exc)
        raise

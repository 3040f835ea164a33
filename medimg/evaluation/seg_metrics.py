"""Per-case segmentation metrics in physical units (mm, ml) on anisotropic grids.

One call returns every metric of one case as a flat ``dict[str, float]`` whose keys
end in the label value, ready to become a row of the per-case CSV:

=====================  ==========================================================
key                    meaning
=====================  ==========================================================
``dice_<l>``           Dice overlap ``2|P∩R| / (|P|+|R|)``
``iou_<l>``            Jaccard index ``|P∩R| / |P∪R|``
``hd95_<l>``           95th percentile symmetric Hausdorff distance, mm
``assd_<l>``           average symmetric surface distance, mm
``nsd_<l>``            normalised surface Dice at ``tolerance_mm``
``vol_ref_ml_<l>``     reference volume, ml
``vol_pred_ml_<l>``    predicted volume, ml
``avd_ml_<l>``         absolute volume difference ``|Vp - Vr|``, ml
``rvd_<l>``            relative volume difference ``(Vp - Vr) / Vr``
``empty_ref_<l>``      1.0 when the reference has no voxel of the label, else 0.0
``empty_pred_<l>``     1.0 when the prediction has no voxel of the label, else 0.0
=====================  ==========================================================

Empty masks are handled explicitly, never averaged away silently:

* **both empty** (a true negative case): dice = iou = nsd = 1 (nnU-Net's convention),
  hd95 = assd = NaN (there is no surface to measure), volumes 0, avd = rvd = 0.
* **reference empty, prediction not** (a false positive case): dice = iou = nsd = 0,
  hd95 = assd = NaN (no reference surface to measure to), rvd = NaN (undefined),
  ``empty_ref`` = 1.
* **prediction empty, reference not** (a missed structure): dice = iou = nsd = 0,
  hd95 = assd = NaN, rvd = -1, ``empty_pred`` = 1.

The NaNs are recorded together with their flags; the study summary counts them
(``n_nan``) next to every mean so a reviewer sees how many cases a distance
aggregate leaves out, and reports an aggregate no case defines as *undefined* with
the reason (:mod:`medimg.evaluation.undefined`).

Surfaces are the mask voxels removed by one binary erosion (face connectivity),
and distances are exact Euclidean distance transforms with ``sampling=spacing``;
the definitions match MONAI's ``compute_hausdorff_distance`` (percentile 95),
``compute_average_surface_distance`` (symmetric) and ``compute_surface_dice``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medimg.errors import GeometryError

METRIC_PREFIXES: tuple[str, ...] = (
    "dice",
    "iou",
    "hd95",
    "assd",
    "nsd",
    "vol_ref_ml",
    "vol_pred_ml",
    "avd_ml",
    "rvd",
    "empty_ref",
    "empty_pred",
)
"""Every key prefix :func:`segmentation_case_metrics` writes (``<prefix>_<label>``)."""

HIGHER_IS_BETTER: dict[str, bool] = {
    "dice": True,
    "iou": True,
    "nsd": True,
    "hd95": False,
    "assd": False,
    "avd_ml": False,
}
"""Direction of the quality metrics, used by comparisons and subgroup gaps."""


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` that touch the background (face connectivity; grid edge counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each prediction surface voxel to the reference surface, and back.

    Both masks must be non-empty booleans of the same shape. The computation is cropped
    to the bounding box of both masks (plus one voxel), which leaves distances exact.

    Args:
        pred: Boolean prediction mask.
        ref: Boolean reference mask.
        spacing: Voxel size in mm along each array axis.

    Returns:
        ``(pred_to_ref, ref_to_pred)``: 1-D float arrays, one entry per surface voxel.

    Example:
        >>> ref = np.zeros((1, 1, 10), bool); ref[0, 0, 2] = True
        >>> pred = np.zeros((1, 1, 10), bool); pred[0, 0, 5] = True
        >>> surface_distances(pred, ref, (1.0, 1.0, 2.0))[0].tolist()
        [6.0]
    """
    union = pred | ref
    nonzero = np.nonzero(union)
    box = tuple(
        slice(max(int(idx.min()) - 1, 0), min(int(idx.max()) + 2, size))
        for idx, size in zip(nonzero, union.shape, strict=True)
    )
    pred_edge = _surface(pred[box])
    ref_edge = _surface(ref[box])
    sampling = [float(s) for s in spacing]
    dist_to_ref = ndimage.distance_transform_edt(~ref_edge, sampling=sampling)
    dist_to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=sampling)
    return np.asarray(dist_to_ref[pred_edge], float), np.asarray(dist_to_pred[ref_edge], float)


def _check_inputs(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[float, ...]:
    if pred.shape != ref.shape:
        raise GeometryError(
            f"prediction shape {pred.shape} differs from reference shape {ref.shape}; "
            "resample the prediction onto the reference grid before evaluating"
        )
    if len(spacing) != pred.ndim:
        raise GeometryError(
            f"spacing {tuple(spacing)} has {len(spacing)} values; expected {pred.ndim} (one per axis)"
        )
    spacing_f = tuple(float(s) for s in spacing)
    if not all(np.isfinite(s) and s > 0 for s in spacing_f):
        raise GeometryError(f"spacing {spacing_f} must be positive finite mm values")
    return spacing_f


def label_metrics(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 2.0
) -> dict[str, float]:
    """All metrics of one binary structure, keys without the label suffix.

    Args:
        pred_mask: Boolean prediction mask.
        ref_mask: Boolean reference mask, same shape.
        spacing: Voxel size in mm per axis.
        tolerance_mm: Tolerance of the normalised surface Dice, mm.

    Returns:
        ``{"dice": ..., "iou": ..., "hd95": ..., ...}`` (see the module table).

    Example:
        >>> m = np.zeros((4, 4, 4), bool); m[1:3, 1:3, 1:3] = True
        >>> label_metrics(m, m, (1, 1, 1))["dice"]
        1.0
    """
    spacing_f = _check_inputs(pred_mask, ref_mask, spacing)
    pred_mask = np.asarray(pred_mask, bool)
    ref_mask = np.asarray(ref_mask, bool)
    voxel_ml = float(np.prod(spacing_f)) / 1000.0
    n_pred = int(pred_mask.sum())
    n_ref = int(ref_mask.sum())
    vol_pred = n_pred * voxel_ml
    vol_ref = n_ref * voxel_ml
    out: dict[str, float] = {
        "vol_ref_ml": vol_ref,
        "vol_pred_ml": vol_pred,
        "avd_ml": abs(vol_pred - vol_ref),
        "empty_ref": float(n_ref == 0),
        "empty_pred": float(n_pred == 0),
    }
    if n_pred == 0 and n_ref == 0:
        out.update(dice=1.0, iou=1.0, hd95=float("nan"), assd=float("nan"), nsd=1.0, rvd=0.0)
        return out
    if n_pred == 0 or n_ref == 0:
        rvd = -1.0 if n_pred == 0 else float("nan")
        out.update(dice=0.0, iou=0.0, hd95=float("nan"), assd=float("nan"), nsd=0.0, rvd=rvd)
        return out
    inter = int(np.logical_and(pred_mask, ref_mask).sum())
    out["dice"] = 2.0 * inter / (n_pred + n_ref)
    out["iou"] = inter / (n_pred + n_ref - inter)
    out["rvd"] = (vol_pred - vol_ref) / vol_ref
    d_pred_ref, d_ref_pred = surface_distances(pred_mask, ref_mask, spacing_f)
    out["hd95"] = float(max(np.percentile(d_pred_ref, 95), np.percentile(d_ref_pred, 95)))
    both = np.concatenate([d_pred_ref, d_ref_pred])
    out["assd"] = float(both.mean())
    out["nsd"] = float((both <= tolerance_mm).sum() / both.size)
    return out


def segmentation_case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float, float],
    labels: Sequence[int],
    tolerance_mm: float = 2.0,
) -> dict[str, float]:
    """Every segmentation metric of one case, per label, as a flat dict.

    ``pred`` and ``ref`` are label maps on the same voxel grid (resample the prediction
    into the reference geometry first). Distances and volumes use ``spacing`` (mm per
    array axis, e.g. ``Volume.spacing``), so anisotropic voxels are measured correctly.
    See the module docstring for the keys and the empty-mask rules.

    Args:
        pred: Predicted label map (integer or boolean array).
        ref: Reference label map, same shape as ``pred``.
        spacing: Voxel size in mm along each array axis.
        labels: Label values to evaluate (background is usually left out).
        tolerance_mm: Tolerance of the normalised surface Dice, mm.

    Returns:
        ``{"dice_1": ..., "hd95_1": ..., "empty_ref_1": 0.0, ...}``.

    Raises:
        GeometryError: When the shapes differ or the spacing does not fit the array.

    Example:
        >>> ref = np.zeros((8, 8, 8), np.uint8); ref[2:6, 2:6, 2:6] = 1
        >>> m = segmentation_case_metrics(ref, ref, (1.0, 1.0, 2.5), labels=[1])
        >>> m["dice_1"], m["hd95_1"], m["vol_ref_ml_1"]
        (1.0, 0.0, 0.16)
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    _check_inputs(pred, ref, spacing)
    if len(labels) == 0:
        raise ValueError("labels is empty; name at least one label value to evaluate")
    out: dict[str, float] = {}
    for label in labels:
        values = label_metrics(pred == label, ref == label, spacing, tolerance_mm)
        for prefix in METRIC_PREFIXES:
            out[f"{prefix}_{label}"] = float(values[prefix])
    return out

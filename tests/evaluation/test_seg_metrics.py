"""Segmentation metrics: hand-computed distances in mm on anisotropic grids, MONAI agreement, empties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medimg.errors import GeometryError
from medimg.evaluation.seg_metrics import METRIC_PREFIXES, segmentation_case_metrics

SPACING = (0.7, 1.3, 3.0)


def _blob(shape: tuple[int, int, int], seed: int, threshold: float = 0.55) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random(shape), sigma=(2.0, 1.5, 1.0))
    return noise > np.quantile(noise, threshold)


def test_single_voxels_distance_is_euclidean_in_mm() -> None:
    ref = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[2, 3, 4] = 1
    pred[5, 7, 5] = 1  # offsets (3, 4, 1) voxels
    m = segmentation_case_metrics(pred, ref, SPACING, labels=[1])
    expected = math.sqrt((3 * 0.7) ** 2 + (4 * 1.3) ** 2 + (1 * 3.0) ** 2)
    assert m["hd95_1"] == pytest.approx(expected)
    assert m["assd_1"] == pytest.approx(expected)
    assert m["dice_1"] == 0.0 and m["iou_1"] == 0.0
    assert m["vol_ref_ml_1"] == pytest.approx(0.7 * 1.3 * 3.0 / 1000)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_parallel_planes_distance_follows_axis_spacing(axis: int) -> None:
    shape = (12, 12, 12)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    index_ref = [slice(None)] * 3
    index_pred = [slice(None)] * 3
    index_ref[axis], index_pred[axis] = 3, 5  # two voxels apart along ``axis``
    ref[tuple(index_ref)] = 1
    pred[tuple(index_pred)] = 1
    gap = 2 * SPACING[axis]
    m = segmentation_case_metrics(pred, ref, SPACING, labels=[1], tolerance_mm=gap - 0.01)
    assert m["hd95_1"] == pytest.approx(gap)
    assert m["assd_1"] == pytest.approx(gap)
    assert m["nsd_1"] == 0.0
    m = segmentation_case_metrics(pred, ref, SPACING, labels=[1], tolerance_mm=gap + 0.01)
    assert m["nsd_1"] == 1.0


def test_overlap_and_volumes_hand_computed() -> None:
    ref = np.zeros((10, 10, 10), np.int16)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 2:6] = 2  # 64 voxels
    pred[2:6, 2:6, 3:7] = 2  # 64 voxels, 48 shared
    pred[0, 0, 0] = 1  # another label must not leak into label 2
    m = segmentation_case_metrics(pred, ref, SPACING, labels=[2])
    voxel_ml = 0.7 * 1.3 * 3.0 / 1000
    assert m["dice_2"] == pytest.approx(2 * 48 / 128)
    assert m["iou_2"] == pytest.approx(48 / 80)
    assert m["vol_ref_ml_2"] == pytest.approx(64 * voxel_ml)
    assert m["avd_ml_2"] == pytest.approx(0.0)
    assert m["rvd_2"] == pytest.approx(0.0)
    # the two faces perpendicular to axis 2 are one voxel (3 mm) from their counterpart
    assert m["hd95_2"] == pytest.approx(3.0)
    pred[2:6, 2:6, 7] = 2  # +16 voxels
    m = segmentation_case_metrics(pred, ref, SPACING, labels=[2])
    assert m["avd_ml_2"] == pytest.approx(16 * voxel_ml)
    assert m["rvd_2"] == pytest.approx(16 / 64)


def test_keys_are_flat_and_complete() -> None:
    ref = np.zeros((6, 6, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1
    ref[3:5, 3:5, 3:5] = 2
    m = segmentation_case_metrics(ref, ref, SPACING, labels=[1, 2])
    assert set(m) == {f"{p}_{label}" for p in METRIC_PREFIXES for label in (1, 2)}
    assert all(isinstance(v, float) for v in m.values())
    assert m["dice_1"] == m["dice_2"] == 1.0 and m["hd95_2"] == 0.0


def test_empty_cases_are_explicit() -> None:
    empty = np.zeros((6, 6, 6), np.uint8)
    full = empty.copy()
    full[2:4, 2:4, 2:4] = 1
    both = segmentation_case_metrics(empty, empty, SPACING, labels=[1])
    assert (both["dice_1"], both["iou_1"], both["nsd_1"]) == (1, 1, 1)
    assert math.isnan(both["hd95_1"]) and math.isnan(both["assd_1"])  # no surface: undefined
    assert both["empty_ref_1"] == 1.0 and both["empty_pred_1"] == 1.0
    missed = segmentation_case_metrics(empty, full, SPACING, labels=[1])
    assert missed["dice_1"] == 0.0 and missed["nsd_1"] == 0.0 and missed["rvd_1"] == -1.0
    assert math.isnan(missed["hd95_1"]) and math.isnan(missed["assd_1"])
    assert missed["empty_pred_1"] == 1.0 and missed["empty_ref_1"] == 0.0
    false_pos = segmentation_case_metrics(full, empty, SPACING, labels=[1])
    assert false_pos["dice_1"] == 0.0 and math.isnan(false_pos["hd95_1"]) and math.isnan(false_pos["rvd_1"])
    assert false_pos["empty_ref_1"] == 1.0 and false_pos["empty_pred_1"] == 0.0
    assert false_pos["vol_pred_ml_1"] == pytest.approx(8 * 0.7 * 1.3 * 3.0 / 1000)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_monai_on_anisotropic_blobs(seed: int) -> None:
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    torch.set_num_threads(1)
    shape = (24, 20, 12)
    ref = _blob(shape, seed)
    pred = ndimage.binary_dilation(_blob(shape, seed + 100, 0.6) & ref, iterations=1) | _blob(
        shape, seed + 7, 0.97
    )
    m = segmentation_case_metrics(
        pred.astype(np.uint8), ref.astype(np.uint8), SPACING, labels=[1], tolerance_mm=2.0
    )
    y_pred = torch.from_numpy(pred)[None, None].float()
    y = torch.from_numpy(ref)[None, None].float()
    kw = {"include_background": True, "spacing": list(SPACING)}
    assert m["dice_1"] == pytest.approx(compute_dice(y_pred, y).item(), rel=1e-6)
    assert m["iou_1"] == pytest.approx(compute_iou(y_pred, y).item(), rel=1e-6)
    assert m["hd95_1"] == pytest.approx(
        compute_hausdorff_distance(y_pred, y, percentile=95, **kw).item(), rel=1e-5
    )
    assert m["assd_1"] == pytest.approx(
        compute_average_surface_distance(y_pred, y, symmetric=True, **kw).item(), rel=1e-5
    )
    assert m["nsd_1"] == pytest.approx(
        compute_surface_dice(y_pred, y, class_thresholds=[2.0], **kw).item(), rel=1e-5
    )


def test_spacing_is_per_array_axis() -> None:
    ref = np.zeros((8, 8, 8), np.uint8)
    pred = ref.copy()
    ref[1, 1, 1] = 1
    pred[1, 1, 4] = 1
    assert segmentation_case_metrics(pred, ref, (1.0, 1.0, 3.0), [1])["hd95_1"] == pytest.approx(9.0)
    assert segmentation_case_metrics(pred, ref, (3.0, 1.0, 1.0), [1])["hd95_1"] == pytest.approx(3.0)


def test_shape_mismatch_is_a_geometry_error() -> None:
    with pytest.raises(GeometryError, match="shape"):
        segmentation_case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), SPACING, [1])
    with pytest.raises(GeometryError, match="spacing"):
        segmentation_case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 1.0), [1])


def test_distance_equals_world_distance_on_an_oblique_volume() -> None:
    """With Volume.spacing, the mm distance equals the distance between the voxels' world positions."""
    from scipy.spatial.transform import Rotation

    from medimg.io.volume import Volume

    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [20, -35, 10], degrees=True).as_matrix() @ np.diag(
        [0.6, 1.4, 3.2]
    )
    affine[:3, 3] = [-80.0, 12.0, 40.0]
    ref = np.zeros((12, 12, 12), np.uint8)
    pred = np.zeros_like(ref)
    ref[2, 9, 3] = 1
    pred[7, 4, 6] = 1
    volume = Volume(ref, affine, "RAS", {})
    m = segmentation_case_metrics(pred, ref, volume.spacing, labels=[1])
    world = lambda ijk: affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]  # noqa: E731
    assert m["hd95_1"] == pytest.approx(np.linalg.norm(world((7, 4, 6)) - world((2, 9, 3))))

"""Boxes for one scan: the plan's grid, sliding windows (or the whole volume), NMS across windows.

The scan is resampled along its own axes to the plan spacing and z-scored. A volume no larger
than the plan's patch runs in one pass; a larger one runs as overlapping windows of the patch size,
each through the detector on its own (which keeps overlapping boxes: its own NMS is off). The boxes
of all windows, shifted to the volume, are merged by non-maximum suppression
(``monai.data.box_utils.non_max_suppression``), so a lesion seen by two windows is reported once,
and each kept box is moved to the score-weighted mean of the boxes it suppressed
(:func:`merge_boxes`). Boxes are returned on the *input* scan's grid (through world mm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medimg.detection.boxes import VoxelBox
from medimg.detection.grid import move_boxes, normalise, to_grid
from medimg.detection.plan import DetectionPlan
from medimg.io.volume import Volume


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of windows of ``window`` covering ``size`` with about ``overlap`` overlap.

    Example:
        >>> window_starts(100, 64, 0.25)
        [0, 36]
    """
    if size <= window:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    starts = list(range(0, size - window, step))
    return [*starts, size - window]


def _detect(detector: Any, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = detector([torch.from_numpy(np.ascontiguousarray(data))[None]], use_inferer=False)[0]
    return out["boxes"].float().numpy().reshape(-1, 6), out["labels_scores"].float().numpy().reshape(-1)


def merge_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    nms_iou: float,
    max_boxes: int,
    fuse_iou: float = 0.5,
    passes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Non-maximum suppression, each kept box moved to the score-weighted mean of its cluster.

    NMS (``monai.data.box_utils.non_max_suppression`` at ``nms_iou``) decides which boxes stay;
    each kept box's corners become the score-weighted mean of every box overlapping it by IoU >=
    ``fuse_iou`` (itself included), which localises better than the single best box. With
    ``passes`` (the index of the pass, e.g. the test-time flip, that found each box) the kept box's
    score is the mean over all passes of each pass's best score in the cluster (0 for a pass that
    did not see it), so a box found in one flip only does not keep that flip's score; without,
    it is the kept box's own score.

    Example:
        >>> b = np.array([[0, 0, 0, 4, 4, 4], [1, 0, 0, 5, 4, 4], [20, 20, 20, 22, 22, 22]], float)
        >>> kept, s = merge_boxes(b, np.array([0.9, 0.9, 0.5]), nms_iou=0.2, max_boxes=10)
        >>> kept[0].tolist(), s.tolist()
        ([0.5, 0.0, 0.0, 4.5, 4.0, 4.0], [0.9, 0.5])
        >>> merge_boxes(b, np.array([0.9, 0.7, 0.5]), 0.2, 10, passes=np.array([0, 1, 1]))[1].tolist()
        [0.8, 0.25]
    """
    from monai.data.box_utils import non_max_suppression

    from medimg.detection.metrics import box_iou

    if len(boxes) == 0:
        return boxes.reshape(0, 6), scores.reshape(0)
    keep = np.asarray(non_max_suppression(boxes, scores, nms_thresh=nms_iou, max_proposals=max_boxes), int)
    overlap = box_iou(boxes[keep], boxes)
    merged = np.empty((len(keep), 6))
    kept_scores = np.asarray(scores[keep], np.float64).copy()
    n_passes = 1 if passes is None else int(passes.max()) + 1
    for row in range(len(keep)):
        weights = np.where(overlap[row] >= fuse_iou, scores, 0.0)
        merged[row] = (weights[:, None] * boxes).sum(0) / weights.sum()
        if passes is not None:
            kept_scores[row] = sum(weights[passes == p].max(initial=0.0) for p in range(n_passes)) / n_passes
    order = np.argsort(-kept_scores, kind="stable")
    return merged[order].astype(np.float32), kept_scores[order].astype(scores.dtype)


FLIPS = tuple(tuple(a for a in range(3) if f >> a & 1) for f in range(8))


def _flip_back(boxes: np.ndarray, axes: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Corners found on an array flipped along ``axes`` expressed on the unflipped array.

    Voxel ``i`` becomes ``n - 1 - i``, so a span ``[lo, hi]`` becomes ``[n - 1 - hi, n - 1 - lo]``.

    Example:
        >>> _flip_back(np.array([[0.5, 0, 0, 2.5, 1, 1]]), (0,), (10, 4, 4)).tolist()
        [[6.5, 0.0, 0.0, 8.5, 1.0, 1.0]]
    """
    out = boxes.copy()
    for a in axes:
        out[:, a], out[:, a + 3] = (shape[a] - 1) - boxes[:, a + 3], (shape[a] - 1) - boxes[:, a]
    return out


def _shifted(data: np.ndarray, shift: Sequence[int]) -> np.ndarray:
    """``data`` translated by ``shift`` voxels (content at ``i`` moves to ``i + shift``), edges repeated.

    Example:
        >>> _shifted(np.arange(4.0)[:, None, None], (1, 0, 0))[:, 0, 0].tolist()
        [0.0, 0.0, 1.0, 2.0]
    """
    m = [abs(int(t)) for t in shift]
    padded = np.pad(data, [(a, a) for a in m], mode="edge")
    return padded[
        tuple(slice(a - int(t), a - int(t) + n) for a, t, n in zip(m, shift, data.shape, strict=True))
    ]


def detect_array(
    detector: Any, data: np.ndarray, plan: DetectionPlan, overlap: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Corners ``(N, 6)`` and scores ``(N,)`` for a normalised array on the plan grid.

    With ``plan.flip_tta`` every window also runs flipped along each subset of the three axes
    (8 passes) and, when ``plan.tta_shift`` is not zero, the 8 flips again on the scan translated by
    ``plan.tta_shift`` voxels (half the finest pyramid level's stride, so the anchors sit on the
    other phase of their grid: 16 passes); the boxes are moved back and fused with the others
    (:func:`merge_boxes` at ``plan.fuse_iou``).

    Example:
        >>> corners, scores = detect_array(detector, np.zeros((64, 64, 32), np.float32), plan)  # doctest: +SKIP
    """
    detector.eval()
    patch = plan.patch_size
    flips = FLIPS if plan.flip_tta else FLIPS[:1]
    shifts = [(0, 0, 0)]
    if plan.flip_tta and any(plan.tta_shift):
        shifts.append(tuple(int(t) for t in plan.tta_shift))  # type: ignore[arg-type]
    all_boxes, all_scores, all_passes = [], [], []
    for s, shift in enumerate(shifts):
        moved = _shifted(data, shift) if any(shift) else data
        back = np.array([*shift, *shift], np.float32)
        for x in window_starts(data.shape[0], patch[0], overlap):
            for y in window_starts(data.shape[1], patch[1], overlap):
                for z in window_starts(data.shape[2], patch[2], overlap):
                    window = moved[x : x + patch[0], y : y + patch[1], z : z + patch[2]]
                    for n, axes in enumerate(flips):
                        boxes, scores = _detect(detector, np.flip(window, axes) if axes else window)
                        boxes = _flip_back(boxes, axes, window.shape)
                        all_boxes.append(boxes + np.array([x, y, z, x, y, z], np.float32) - back)
                        all_scores.append(scores)
                        all_passes.append(np.full(len(scores), s * len(flips) + n))
    return merge_boxes(
        np.concatenate(all_boxes),
        np.concatenate(all_scores),
        plan.nms_iou,
        plan.max_detections,
        fuse_iou=plan.fuse_iou,
        passes=np.concatenate(all_passes) if plan.flip_tta else None,
    )


def predict_boxes(
    detector: Any, plan: DetectionPlan, volume: Volume, overlap: float = 0.25
) -> list[VoxelBox]:
    """The detector's boxes for ``volume``, on ``volume``'s own voxel grid, best score first.

    Example:
        >>> boxes = predict_boxes(detector, plan, load_image("scan.nii.gz"))  # doctest: +SKIP
        >>> voxel_to_world(boxes[0], volume).centre_mm  # doctest: +SKIP
    """
    grid = to_grid(volume, plan.spacing)
    corners, scores = detect_array(detector, normalise(grid.data), plan, overlap)
    on_grid = [VoxelBox.from_corners(c, float(s)) for c, s in zip(corners, scores, strict=True)]
    moved = move_boxes(on_grid, grid, volume) if grid is not volume else on_grid
    return sorted(moved, key=lambda b: -b.score)


def corners_array(boxes: Sequence[VoxelBox]) -> np.ndarray:
    """``(N, 6)`` corners of ``boxes``."""
    return np.array([b.corners() for b in boxes], np.float32).reshape(-1, 6)

"""The detection plan: the grid the detector sees and anchors sized from the training boxes.

The plan is made once from the training split (box sizes in mm and the images' spacings) and
saved with the model, so inference rebuilds exactly the network and grid it was trained with.
Anchor shapes are in voxels of the plan spacing: the per-axis quantiles of the training boxes'
extents at that spacing, so anisotropic grids get anisotropic anchors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medimg.errors import DataError

ANCHOR_QUANTILES = (0.15, 0.5, 0.85)
# the box coder's weights on the centre deltas (dx, dy, dz) and the log-size deltas (dw, dh, dd):
# torchvision's Faster R-CNN choice (10 for centres, 5 for sizes) instead of MONAI's 1s puts the
# regression loss's errors of a few tenths of a voxel into smooth L1's linear part (beta = 1/9) and
# weighs centres over sizes; on the detection quickstart it raised AP@0.5 from 0.38 to 0.58
# (docs/detection.md). Plans saved before this field keep MONAI's 1s.
BOX_CODER_WEIGHTS = (10.0, 10.0, 10.0, 5.0, 5.0, 5.0)


@dataclass(frozen=True)
class DetectionPlan:
    """Everything that fixes the detector and its input grid (saved as ``plan.json``)."""

    spacing: tuple[float, float, float]
    anchor_shapes: tuple[tuple[float, float, float], ...]
    patch_size: tuple[int, int, int]
    conv1_stride: tuple[int, int, int] = (2, 2, 1)
    returned_layers: tuple[int, ...] = (1, 2)
    block_inplanes: tuple[int, ...] = (8, 16, 32, 64)
    fpn_channels: int = 16
    head_layers: int = 2
    score_thresh: float = 0.02
    nms_iou: float = 0.22
    max_detections: int = 50
    box_coder_weights: tuple[float, ...] = BOX_CODER_WEIGHTS
    flip_tta: bool = False
    # fusion and the test-time shift: see medimg.detection.predict (plans saved before keep 0.5 and none)
    fuse_iou: float = 0.3
    tta_shift: tuple[int, int, int] = (0, 0, 0)
    box_stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DetectionPlan:
        """The plan back from :meth:`to_dict`."""
        tup = lambda v: tuple(v)  # noqa: E731
        return cls(
            spacing=tup(raw["spacing"]),
            anchor_shapes=tuple(tuple(s) for s in raw["anchor_shapes"]),
            patch_size=tup(raw["patch_size"]),
            conv1_stride=tup(raw["conv1_stride"]),
            returned_layers=tup(raw["returned_layers"]),
            block_inplanes=tup(raw["block_inplanes"]),
            fpn_channels=int(raw["fpn_channels"]),
            head_layers=int(raw.get("head_layers", 4)),
            score_thresh=float(raw["score_thresh"]),
            nms_iou=float(raw["nms_iou"]),
            max_detections=int(raw["max_detections"]),
            flip_tta=bool(raw.get("flip_tta", False)),
            fuse_iou=float(raw.get("fuse_iou", 0.5)),
            tta_shift=tuple(int(v) for v in raw.get("tta_shift", (0, 0, 0))),  # type: ignore[arg-type]
            box_coder_weights=tuple(float(v) for v in raw.get("box_coder_weights", (1.0,) * 6)),
            box_stats=dict(raw.get("box_stats", {})),
        )


def plan_detection(
    box_sizes_mm: Sequence[Sequence[float]],
    spacings: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
    *,
    patch_size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
) -> DetectionPlan:
    """Plan the grid and the anchors from the training boxes (mm along the scan axes) and images.

    The spacing is the median of the images' spacings (unless given); the first convolution
    does not stride an axis whose voxels are over 1.5x coarser than the finest. The patch is the
    median image shape on that grid, rounded up to what the network divides by (unless given).

    Example:
        >>> p = plan_detection([(6, 6, 6), (12, 12, 12)], [(1.0, 1.0, 2.0)] * 2, [(64, 64, 32)] * 2)
        >>> p.conv1_stride, p.anchor_shapes[1]
        ((2, 2, 1), (9.0, 9.0, 4.5))
    """
    if len(box_sizes_mm) == 0:
        raise DataError("the training split has no boxes: a detector needs lesions to learn from")
    sp = np.median(np.asarray(spacings, float), axis=0) if spacing is None else np.asarray(spacing, float)
    finest = float(sp.min())
    stride = tuple(1 if s > 1.5 * finest else 2 for s in sp)
    extents = np.asarray(box_sizes_mm, float) / sp
    shapes_anchor = tuple(
        tuple(round(float(v), 3) for v in np.quantile(extents, q, axis=0)) for q in ANCHOR_QUANTILES
    )
    returned = (1, 2)
    divisor = np.array(stride) * 2 ** max(returned)
    if patch_size is None:
        grid = np.median(np.asarray(shapes, float) * np.asarray(spacings, float) / sp, axis=0)
        patch = tuple(int(np.ceil(g / d) * d) for g, d in zip(grid, divisor, strict=True))
    else:
        patch = tuple(int(v) for v in patch_size)
        bad = [int(v) for v, d in zip(patch, divisor, strict=True) if v % d]
        if bad:
            raise DataError(
                f"detection.patch_size {patch} must be divisible by {tuple(int(d) for d in divisor)}"
            )
    stats = {
        "n_boxes": len(extents),
        "size_mm_median": [round(float(v), 3) for v in np.median(np.asarray(box_sizes_mm, float), axis=0)],
        "size_mm_min": [round(float(v), 3) for v in np.min(np.asarray(box_sizes_mm, float), axis=0)],
        "size_mm_max": [round(float(v), 3) for v in np.max(np.asarray(box_sizes_mm, float), axis=0)],
        "anchor_quantiles": list(ANCHOR_QUANTILES),
    }
    return DetectionPlan(
        spacing=tuple(float(v) for v in sp),  # type: ignore[arg-type]
        anchor_shapes=shapes_anchor,  # type: ignore[arg-type]
        patch_size=patch,  # type: ignore[arg-type]
        conv1_stride=stride,  # type: ignore[arg-type]
        returned_layers=returned,
        # half the finest pyramid level's stride (conv1 stride x max pool 2): the anchor grid's other phase
        tta_shift=stride,  # type: ignore[arg-type]
        box_stats=stats,
    )

"""The detection case report: three orthogonal slices through every box centre with its outline.

One self-contained HTML page per case (``cases/<case>/report.html`` of a detection cohort): a table
of the boxes (score, world centre, size in mm, voxel centre) and, per box, the three planes of the
scan's own voxel grid through the voxel nearest its centre, with the box drawn as a red outline.
A box is axis-aligned on that grid, so its outline is an exact rectangle in each plane: the
rectangle's edges are the box's corners (voxel ``i`` covers ``[i - 0.5, i + 0.5]``), scaled to
pixels. Pixels keep the voxels' physical aspect ratio (each voxel is drawn as a block of
``round(spacing / finest spacing) * zoom`` pixels per axis). Images are inline base64 PNGs, there is
no script and nothing is fetched (the markup is ``templates/detection_report.html``, autoescape on);
the page names the case only by its key.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medimg.detection.boxes import VoxelBox, voxel_to_world
from medimg.io.atomic import atomic_write_text
from medimg.io.volume import Volume
from medimg.templating import package_environment

OUTLINE_RGB = (255, 0, 0)
AXES = "ijk"


@dataclass(frozen=True)
class Panel:
    """One plane through a box: the slice, its pixel scale and the outline's pixel rectangle.

    ``rect`` is ``(row0, col0, row1, col1)``, the first and last pixel rows/columns of the outline
    (inclusive), ``None`` when the box does not cross this plane's panel.
    """

    normal: int
    index: int
    rgb: np.ndarray
    scale: tuple[int, int]
    rect: tuple[int, int, int, int] | None

    @property
    def title(self) -> str:
        rows, cols = (AXES[a] for a in range(3) if a != self.normal)
        return f"{AXES[self.normal]} = {self.index} (rows {rows}, columns {cols})"


def _grey(data: np.ndarray) -> np.ndarray:
    """Intensities windowed to their 1st-99th percentiles, as uint8."""
    lo, hi = np.percentile(data, [1, 99]) if data.size else (0.0, 1.0)
    scaled = (np.asarray(data, np.float64) - lo) / (hi - lo if hi > lo else 1.0)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def pixel_scale(spacing: Sequence[float], shape: Sequence[int], target: int = 192) -> tuple[int, int, int]:
    """Pixels per voxel along each axis: physical aspect kept, the largest side near ``target``.

    Example:
        >>> pixel_scale((1.5, 1.5, 3.0), (48, 48, 24))
        (4, 4, 8)
    """
    sp = np.asarray(spacing, float)
    ratio = np.maximum(1, np.round(sp / sp.min())).astype(int)
    zoom = max(1, int(target // max(int(n) * int(r) for n, r in zip(shape, ratio, strict=True))))
    return tuple(int(r * zoom) for r in ratio)  # type: ignore[return-value]


def _edges(lo: float, hi: float, scale: int, n: int) -> tuple[int, int]:
    """First and last pixel of the span ``[lo, hi]`` (voxel coordinates) on a panel of ``n`` voxels."""
    first = int(np.floor((lo + 0.5) * scale + 1e-6))
    last = int(np.ceil((hi + 0.5) * scale - 1e-6)) - 1
    return max(0, min(first, n * scale - 1)), max(0, min(last, n * scale - 1))


def box_panels(grey: np.ndarray, box: VoxelBox, scale: Sequence[int]) -> list[Panel]:
    """The three planes through the voxel nearest ``box``'s centre, the outline drawn in red.

    ``grey`` is the scan as uint8 (see :func:`_grey`); ``scale`` the pixels per voxel per axis.

    Example:
        >>> g = np.zeros((10, 8, 6), np.uint8)
        >>> [p.rect for p in box_panels(g, VoxelBox((4.0, 3.0, 2.0), (3.0, 3.0, 1.0)), (2, 2, 2))]
        [(4, 4, 9, 5), (6, 4, 11, 5), (6, 4, 11, 9)]
    """
    lo, hi = np.asarray(box.corners()[:3]), np.asarray(box.corners()[3:])
    centre = np.clip(np.round(box.centre).astype(int), 0, np.asarray(grey.shape) - 1)
    panels = []
    for normal in range(3):
        rows, cols = (a for a in range(3) if a != normal)
        plane = np.take(grey, int(centre[normal]), axis=normal)
        pixels = np.repeat(np.repeat(plane, scale[rows], axis=0), scale[cols], axis=1)
        rgb = np.repeat(pixels[..., None], 3, axis=2)
        r0, r1 = _edges(lo[rows], hi[rows], scale[rows], grey.shape[rows])
        c0, c1 = _edges(lo[cols], hi[cols], scale[cols], grey.shape[cols])
        for r, c in (
            (slice(r0, r1 + 1), c0),
            (slice(r0, r1 + 1), c1),
            (r0, slice(c0, c1 + 1)),
            (r1, slice(c0, c1 + 1)),
        ):
            rgb[r, c] = OUTLINE_RGB
        panels.append(Panel(normal, int(centre[normal]), rgb, (scale[rows], scale[cols]), (r0, c0, r1, c1)))
    return panels


def png_bytes(rgb: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 pixels as PNG bytes, pixel for pixel (no resampling)."""
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, np.ascontiguousarray(rgb, np.uint8), format="png")
    return buf.getvalue()


def _box_view(
    n: int, box: VoxelBox, volume: Volume, grey: np.ndarray, scale: Sequence[int]
) -> dict[str, Any]:
    world = voxel_to_world(box, volume)
    size = " x ".join(f"{v:.1f}" for v in world.size_mm)
    return {
        "name": f"box {n}",
        "score": f"{box.score:.3f}",
        "centre_mm": ", ".join(f"{v:.1f}" for v in world.centre_mm),
        "size_mm": size,
        "centre_vox": ", ".join(f"{v:.2f}" for v in box.centre),
        "panels": [
            {"title": p.title, "png": base64.b64encode(png_bytes(p.rgb)).decode("ascii")}
            for p in box_panels(grey, box, scale)
        ],
    }


def render_detection_report(
    case_key: str, volume: Volume, boxes: Sequence[VoxelBox], model: dict[str, Any]
) -> str:
    """The HTML text of one case's detection report (boxes best score first, as given).

    Example:
        >>> page = render_detection_report("scan1", volume, boxes, {"weights_sha256": sha})  # doctest: +SKIP
    """
    data = np.asarray(volume.data, np.float32)
    grey = _grey(data)
    scale = pixel_scale(volume.spacing[:3], data.shape[:3])
    page = (
        package_environment("medimg.detection")
        .get_template("detection_report.html")
        .render(
            key=case_key,
            space=volume.space,
            shape=" x ".join(str(int(n)) for n in data.shape[:3]),
            spacing=" x ".join(f"{v:.3g}" for v in volume.spacing[:3]),
            boxes=[_box_view(n, b, volume, grey, scale) for n, b in enumerate(boxes, start=1)],
            model=[(k, v) for k, v in model.items() if v not in (None, "")],
        )
    )
    return page.rstrip("\n") + "\n"


def write_detection_report(
    case_key: str,
    volume: Volume,
    boxes: Sequence[VoxelBox],
    path: str | os.PathLike[str],
    model: dict[str, Any],
) -> Path:
    """Write the report atomically and return its path."""
    return atomic_write_text(path, render_detection_report(case_key, volume, boxes, model))

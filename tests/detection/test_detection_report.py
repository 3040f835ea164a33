"""The detection case report: every box named with its score and size in mm, its outline drawn
where the box is on three orthogonal slices (checked on the PNG pixels and in headless Chromium)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from _browser import chromium, run_chromium

from medimg.data.synthetic import oblique_affine
from medimg.detection.boxes import VoxelBox, voxel_to_world
from medimg.detection.report import (
    OUTLINE_RGB,
    box_panels,
    pixel_scale,
    render_detection_report,
    write_detection_report,
)
from medimg.io.volume import Volume

SHAPE = (40, 36, 18)
SPACING = (1.0, 1.0, 2.5)
# two bright blocks (voxels [lo, hi) per axis) and the boxes that span them exactly
BLOCKS = [((8, 10, 4), (16, 15, 8)), ((24, 20, 10), (31, 30, 13))]


def _scan() -> tuple[Volume, list[VoxelBox]]:
    rng = np.random.default_rng(0)
    data = rng.normal(0.0, 5.0, SHAPE).astype(np.float32)
    boxes = []
    for (lo, hi), score in zip(BLOCKS, (0.91, 0.42), strict=True):
        data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += 200.0
        corners = np.concatenate([np.array(lo) - 0.5, np.array(hi) - 0.5])
        boxes.append(VoxelBox.from_corners(corners, score))
    affine = oblique_affine(SHAPE, SPACING, 20.0, axis=(1.0, 0.4, 0.3))
    return Volume(data, affine), boxes


def _pngs(page: str) -> list[np.ndarray]:
    from PIL import Image

    found = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")).astype(int) for b in found]


def _red(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)


def _check_outline(rgb: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale: tuple[int, int]) -> None:
    """The red pixels are the rectangle of the block's voxels; inside is bright scan, outside dark."""
    rows, cols = np.nonzero(_red(rgb))
    # the block spans voxels lo..hi-1: pixels lo*s .. hi*s-1 along each panel axis
    assert (rows.min(), rows.max()) == (lo[0] * scale[0], hi[0] * scale[0] - 1)
    assert (cols.min(), cols.max()) == (lo[1] * scale[1], hi[1] * scale[1] - 1)
    grey = rgb[..., 0]
    inside = grey[lo[0] * scale[0] + 1 : hi[0] * scale[0] - 1, lo[1] * scale[1] + 1 : hi[1] * scale[1] - 1]
    assert inside.min() >= 200  # the bright block fills the outline
    ring = np.zeros(grey.shape, bool)
    r0, r1 = max(0, (lo[0] - 2) * scale[0]), (hi[0] + 2) * scale[0]
    c0, c1 = max(0, (lo[1] - 2) * scale[1]), (hi[1] + 2) * scale[1]
    ring[r0:r1, c0:c1] = True
    ring[lo[0] * scale[0] : hi[0] * scale[0], lo[1] * scale[1] : hi[1] * scale[1]] = False
    assert np.median(grey[ring]) < 100  # just outside it, the dark background


def test_report_names_every_box_and_draws_it_where_it_is() -> None:
    volume, boxes = _scan()
    page = render_detection_report("scan7", volume, boxes, {"weights sha256": "0" * 64})
    for n, box in enumerate(boxes, start=1):
        size = " x ".join(f"{v:.1f}" for v in voxel_to_world(box, volume).size_mm)
        assert f"box {n}: score {box.score:.3f}, {size} mm" in page
    assert "box 1: score 0.910, 8.0 x 5.0 x 10.0 mm" in page  # 8 x 5 x 4 voxels of 1 x 1 x 2.5 mm
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page) and "default-src 'none'" in page
    scale = pixel_scale(volume.spacing[:3], SHAPE)
    assert scale[0] == scale[1] and scale[2] >= 2 * scale[0]  # thick slices drawn taller
    images = _pngs(page)
    assert len(images) == 3 * len(boxes)
    for b, (lo, hi) in enumerate(BLOCKS):
        for normal in range(3):
            axes = [a for a in range(3) if a != normal]
            rgb = images[3 * b + normal]
            assert rgb.shape[:2] == (SHAPE[axes[0]] * scale[axes[0]], SHAPE[axes[1]] * scale[axes[1]])
            _check_outline(
                rgb,
                np.array(lo)[axes],
                np.array(hi)[axes],
                (scale[axes[0]], scale[axes[1]]),
            )


def test_outline_follows_a_sub_voxel_box() -> None:
    grey = np.zeros((12, 10, 6), np.uint8)
    # corners 2.25..6.75 along i at 4 px per voxel: pixels from (2.25+0.5)*4 = 11 to ceil(7.25*4)-1 = 28;
    # along j 2.5..5.5: pixels 3*4 = 12 to 6*4-1 = 23
    panels = box_panels(grey, VoxelBox((4.5, 4.0, 2.0), (4.5, 3.0, 1.0)), (4, 4, 8))
    assert panels[2].rect == (11, 12, 28, 23)
    assert panels[2].index == 2 and panels[0].index == 4  # round(4.5) = 4 (half to even)
    assert np.all(panels[2].rgb[11, 12:24] == OUTLINE_RGB) and not _red(panels[2].rgb[10:11, 12:24]).any()
    assert not _red(panels[2].rgb[12:28, 13:23]).any()  # the outline only, not filled


@pytest.mark.browser
def test_report_renders_the_outlines_in_chromium(tmp_path: Path) -> None:
    from PIL import Image

    exe = chromium()
    volume, boxes = _scan()
    page = write_detection_report("scan7", volume, boxes, tmp_path / "report.html", {})
    shot_path = tmp_path / "shot.png"
    run_chromium(
        exe, [f"--screenshot={shot_path}", "--window-size=1100,1400", page.resolve().as_uri()], tmp_path
    )
    shot = np.asarray(Image.open(shot_path).convert("RGB")).astype(int)
    from scipy import ndimage

    components, n = ndimage.label(_red(shot), structure=np.ones((3, 3)))
    assert n == 3 * len(boxes)  # one outline per box and plane, each a closed rectangle
    for found in ndimage.find_objects(components):
        rows, cols = found
        assert rows.stop - rows.start > 8 and cols.stop - cols.start > 8
        inside = shot[rows.start + 2 : rows.stop - 2, cols.start + 2 : cols.stop - 2, 0]
        assert np.median(inside) >= 200  # the bright block, drawn inside its outline
        around = shot[rows.start - 6 : rows.start - 3, cols.start : cols.stop, 0]
        assert np.median(around) < 100  # the dark scan just above it

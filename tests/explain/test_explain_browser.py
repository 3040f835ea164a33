"""Case and index pages render in headless Chromium with their images, and request nothing external."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _browser import chromium, run_chromium

from medimg.explain.index import IndexEntry, write_cohort_index
from medimg.explain.maps import SaliencyMap
from medimg.explain.report import CaseExplanation, MethodResult, render_case_report, write_case_report
from medimg.explain.sanity import FaithfulnessResult, RandomisationResult


def _screenshot(exe: str, page: Path, out: Path, size: str = "1200,1600") -> np.ndarray:
    from PIL import Image

    run_chromium(exe, [f"--screenshot={out}", f"--window-size={size}", page.resolve().as_uri()], out.parent)
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def _case(tmp_path: Path) -> CaseExplanation:
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (32, 28, 20)).astype(np.float32)
    image[8:14, 10:16, 6:10] += 4
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in image.shape], indexing="ij")
    cam = np.exp(-((zz - 11) ** 2 + (yy - 13) ** 2 + (xx - 8) ** 2) / 18.0).astype(np.float32)
    structure = np.zeros(image.shape, bool)
    structure[8:14, 10:16, 6:10] = True
    fr = [0.0, 0.5, 1.0]
    res = MethodResult(
        SaliencyMap(cam, "gradcam", {"layer": "features.5"}, {"class": 1}),
        nifti="gradcam.nii.gz",
        randomisation=RandomisationResult(0.08, 0.03),
        faithfulness=FaithfulnessResult(fr, [0.98, 0.1, 0.05], [0.02, 0.9, 0.98], 0.3, 0.7, 0.55),
    )
    return CaseExplanation(
        "case_007",
        "classification",
        image,
        np.diag([0.8, 0.9, 2.5, 1.0]),
        [res],
        prediction={"predicted class": 1, "probability": 0.93},
        truth=1,
        structure=structure,
        model={"model_id": "cube-cls", "run_id": "f" * 32, "weights_sha256": "0" * 64},
    )


def _image_pixels(shot: np.ndarray) -> tuple[int, int]:
    """(warm overlay pixels, 8x8 blocks of mid-grey scan) in a screenshot (text never fills a block)."""
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    warm = (r > 180) & (b < 120) & (r - b > 100)  # the inferno overlay / colour bar
    grey = (abs(r - g) < 6) & (abs(g - b) < 6) & (r > 20) & (r < 230)  # the scan underneath
    h, w = (grey.shape[0] // 8) * 8, (grey.shape[1] // 8) * 8
    blocks = grey[:h, :w].reshape(h // 8, 8, w // 8, 8).all(axis=(1, 3))
    return int(warm.sum()), int(blocks.sum())


def test_report_has_no_external_references(tmp_path):
    page = render_case_report(_case(tmp_path))
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "url(" not in page and "@import" not in page and "<link" not in page
    assert "default-src 'none'" in page  # the browser itself refuses any fetch
    assert page.count("data:image/png;base64,") == 3


@pytest.mark.browser
def test_case_report_renders_with_images_in_chromium(tmp_path):
    exe = chromium()
    report = write_case_report(_case(tmp_path), tmp_path / "case_007" / "report.html")
    shot = _screenshot(exe, report, tmp_path / "shot.png")
    assert shot.shape[:2] == (1600, 1200)
    warm, grey = _image_pixels(shot)
    assert warm > 500 and grey > 300, (warm, grey)
    # control: the same page with its images emptied fails the same check
    broken = tmp_path / "broken.html"
    broken.write_text(
        re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,", report.read_text())
    )
    warm_b, grey_b = _image_pixels(_screenshot(exe, broken, tmp_path / "broken.png"))
    assert warm_b < 50 and grey_b < 10, (warm_b, grey_b)


@pytest.mark.browser
def test_index_renders_and_links_reports(tmp_path):
    exe = chromium()
    entries = [
        IndexEntry(
            "case_001",
            report="case_001/report.html",
            prediction="1",
            confidence=0.91,
            reference="1",
            error=0.09,
        ),
        IndexEntry("case_002", status="failed", reason="DataError: <image of case_002>: truncated"),
    ]
    index = write_cohort_index(entries, tmp_path / "index.html", sort_by="confidence")
    page = index.read_text()
    assert 'href="case_001/report.html"' in page and "failed: DataError" in page
    shot = _screenshot(exe, index, tmp_path / "index.png", size="900,400")
    dark = (shot.sum(axis=2) < 200).sum()  # rendered text
    assert dark > 500

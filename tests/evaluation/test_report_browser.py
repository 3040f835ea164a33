"""The HTML study report renders in headless Chromium with its plots, from the file alone."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _browser import chromium as find_chromium
from _browser import run_chromium

from medimg.evaluation.report import evaluate_study

pytestmark = pytest.mark.browser

PROBE = """<script>window.addEventListener("load", () => {
  const rects = [...document.images].map((i) => { const b = i.getBoundingClientRect();
    return [i.naturalWidth, i.naturalHeight, b.left, b.top, b.width, b.height].join(","); });
  document.body.setAttribute("data-images", rects.join(";"));
  document.body.setAttribute("data-height", document.documentElement.scrollHeight);
});</script></body>"""


def _image_boxes(chromium: str, report: Path, tmp_path: Path) -> tuple[list[list[float]], int]:
    """Image natural sizes and on-page boxes, measured by the browser after load (in a probe copy)."""
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE))
    dom = run_chromium(chromium, ["--window-size=1200,2000", "--dump-dom", probe.as_uri()], tmp_path)
    body = re.search(r'<body data-images="([^"]*)" data-height="(\d+)"', dom)
    assert body, "the report did not finish loading in Chromium"
    boxes = [[float(v) for v in item.split(",")] for item in body.group(1).split(";") if item]
    return boxes, int(body.group(2))


def test_report_renders_with_plots_in_headless_chromium(tmp_path: Path, cls_cohort) -> None:
    import matplotlib.image as mpimg

    chromium = find_chromium()
    df = cls_cohort(n=200)
    history = pd.DataFrame(
        {"epoch": range(5), "train_loss": np.linspace(1, 0.3, 5), "val_auroc": np.linspace(0.6, 0.9, 5)}
    )
    res = evaluate_study(df, "classification", tmp_path / "eval", by=["sex"], history=history, n_boot=100)
    page = res.report_html.read_text()
    assert not re.search(r"https?://", page), "the report must not reference anything outside itself"
    boxes, height = _image_boxes(chromium, res.report_html, tmp_path)
    assert len(boxes) == len(res.plots) >= 6
    assert all(w > 100 and h > 100 for w, h, *_ in boxes), "every embedded PNG decodes"
    shot = tmp_path / "shot.png"
    run_chromium(
        chromium,
        [f"--window-size=1200,{height + 20}", f"--screenshot={shot}", res.report_html.as_uri()],
        tmp_path,
    )
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[1] == 1200 and pixels.shape[0] >= height
    for _, _, left, top, width, box_height in boxes:
        region = pixels[int(top) + 2 : int(top + box_height) - 2, int(left) + 2 : int(left + width) - 2]
        assert region.size > 0
        gray = region.mean(axis=-1)
        assert gray.std() > 0.05, "a plot region of the screenshot is blank"
        assert (gray < 0.6).mean() > 0.005, "a plot region has no drawn lines or text"
        assert len(np.unique((region * 8).astype(int).reshape(-1, 3), axis=0)) >= 4, (
            "a plot region has no colours"
        )
    top_text = pixels[: int(boxes[0][3])].mean(axis=-1)
    assert (top_text < 0.5).mean() > 0.002, "the tables above the plots rendered no text"

"""A DICOM input gets boxes.json in LPS and an SR whose boxes are the same, read back by highdicom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medimg.config.detection import parse_detection_workflow
from medimg.detection.cohort import predict_detection_cohort
from medimg.detection.dicom_sr import read_detection_sr
from medimg.detection.model_folder import save_detector
from medimg.detection.network import build_detector
from medimg.detection.plan import plan_detection
from medimg.inference.cases import CaseInput
from medimg.inference.request import CohortRun
from medimg.io.dicom.write import write_series
from medimg.io.volume import Volume


def test_dicom_case_gets_boxes_json_and_the_same_boxes_in_its_sr(tmp_path: Path) -> None:
    plan = plan_detection([(6, 6, 6), (9, 9, 9)], [(1.5, 1.5, 3.0)] * 2, [(16, 16, 8)] * 2)
    plan = type(plan).from_dict({**plan.to_dict(), "score_thresh": 0.0, "max_detections": 5})
    wf = parse_detection_workflow(
        {"task": "detection", "data": {"manifest": "m.csv"}, "detection": {"box_file": "b.csv"}}
    )
    torch.manual_seed(0)
    save_detector(build_detector(plan), plan, wf, tmp_path / "model")
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0.98, -0.17, 0.0], [0.17, 0.98, 0.0], [0.0, 0.0, 1.0]]) @ np.diag(
        [1.5, 1.5, 3.0]
    )
    data = np.random.default_rng(1).integers(-200, 200, size=(16, 16, 8)).astype(np.int16)
    write_series(Volume(data, affine, "LPS"), tmp_path / "series", rescale=(1.0, -1024.0))
    (tmp_path / "series" / "README.txt").write_text("not DICOM")
    report = predict_detection_cohort(
        tmp_path / "model", CohortRun([CaseInput("ct1", (tmp_path / "series",))], tmp_path / "out")
    )
    assert report.exit_code == 0
    folder = tmp_path / "out" / "cases" / "ct1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "boxes.json",
        "boxes_sr.dcm",
        "case.json",
        "report.html",
    ]
    boxes = json.loads((folder / "boxes.json").read_text())["boxes"]
    assert len(boxes) == 5 and all(b["space"] == "LPS" for b in boxes)
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 * len(boxes)
    for n, b in enumerate(boxes, start=1):  # every box named with its score and size in mm
        size = " x ".join(f"{b[k]:.1f}" for k in ("size_x", "size_y", "size_z"))
        assert f"box {n}: score {b['score']:.3f}, {size} mm" in page
    from_sr = read_detection_sr(folder / "boxes_sr.dcm")
    assert len(from_sr) == 5
    for b, s in zip(boxes, from_sr, strict=True):
        np.testing.assert_allclose(s.centre_mm, (b["x"], b["y"], b["z"]), atol=1e-3)
        np.testing.assert_allclose(s.size_mm, (b["size_x"], b["size_y"], b["size_z"]), atol=1e-3)
        assert abs(s.score - b["score"]) < 1e-6

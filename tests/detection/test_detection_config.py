"""The detection workflow is strict (errors name the file and key), medimg run routes it, windows merge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medimg.cli.main import main
from medimg.config.detection import is_detection_workflow, load_detection_workflow
from medimg.detection.network import build_detector
from medimg.detection.plan import plan_detection
from medimg.detection.predict import _detect, detect_array, merge_boxes, window_starts
from medimg.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_workflow_is_a_valid_detection_workflow() -> None:
    wf = load_detection_workflow(ROOT / "workflows/quickstart-detection.yaml")
    assert wf.task == "detection" and wf.detection.box_file == "boxes.csv"
    assert is_detection_workflow(ROOT / "workflows/quickstart-detection.yaml")
    assert not is_detection_workflow(ROOT / "workflows/quickstart_seg.yaml")


def test_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "det.yaml"
    path.write_text("task: detection\ndata: {manifest: m.csv}\ndetection: {box_file: b.csv, nms: 0.3}\n")
    with pytest.raises(
        ConfigError, match=r"det\.yaml: detection\.nms: unknown key; allowed keys here: box_file"
    ):
        load_detection_workflow(path)
    path.write_text(
        "task: detection\ndata: {manifest: m.csv}\ndetection: {box_file: b.csv, mask_column: m}\n"
    )
    with pytest.raises(ConfigError, match="exactly one of detection.box_file and detection.mask_column"):
        load_detection_workflow(path)
    path.write_text("task: detection\ndata: {manifest: m.csv}\n")
    with pytest.raises(ConfigError, match=r"det\.yaml: detection: required key is missing"):
        load_detection_workflow(path)


def test_medimg_run_routes_a_detection_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "det.yaml"
    path.write_text(
        f"task: detection\ndata: {{manifest: {tmp_path}/none.csv}}\ndetection: {{box_file: b.csv}}\n"
    )
    assert main(["run", str(path), "--check"]) == 3
    assert "--check" in capsys.readouterr().err
    assert main(["run", str(path)]) == 3
    assert "none.csv: manifest not found (data.manifest)" in capsys.readouterr().err


def test_windows_cover_the_volume_and_their_boxes_are_shifted_then_merged() -> None:
    assert window_starts(40, 16, 0.25) == [0, 12, 24]
    assert window_starts(16, 16, 0.25) == [0]
    plan = plan_detection([(6, 6, 6), (9, 9, 9)], [(1.5, 1.5, 3.0)] * 2, [(16, 16, 8)] * 2)
    plan = type(plan).from_dict(
        {**plan.to_dict(), "score_thresh": 0.0, "max_detections": 10000, "nms_iou": 1.0}
    )
    import torch

    torch.manual_seed(0)
    detector = build_detector(plan).eval()
    data = np.random.default_rng(0).normal(size=(28, 16, 8)).astype(np.float32)
    boxes, scores = detect_array(detector, data, plan)
    # by hand: the two windows along i (starts 0 and 12), each shifted, then the same merge
    parts = [_detect(detector, data[x : x + 16]) for x in (0, 12)]
    shifted = np.concatenate([parts[0][0], parts[1][0] + np.array([12, 0, 0, 12, 0, 0], np.float32)])
    expected, expected_scores = merge_boxes(
        shifted, np.concatenate([parts[0][1], parts[1][1]]), 1.0, 10000, fuse_iou=plan.fuse_iou
    )
    np.testing.assert_allclose(boxes, expected, atol=1e-5)
    np.testing.assert_allclose(scores, expected_scores)
    assert boxes[:, 3].max() > 16  # boxes of the second window sit beyond the first one


def test_box_file_cases_must_match_the_manifest(tmp_path: Path) -> None:
    import pandas as pd

    from medimg.detection.cases import load_samples

    (tmp_path / "b.csv").write_text("case_key,x,y,z,diameter\nother,0,0,0,5\n")
    frame = pd.DataFrame({"case_key": ["c1"], "patient_key": ["p1"], "image": ["c1.nii.gz"]})
    with pytest.raises(DataError, match=r"b\.csv: no case_key of the box file is in the manifest"):
        load_samples(frame, tmp_path, box_file="b.csv")

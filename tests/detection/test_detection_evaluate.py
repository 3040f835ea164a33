"""``medimg evaluate`` with a detection model folder (the detection task's ``evaluate`` runner): the
study's split is scored with the boxes ``predict_boxes`` gives, FROC/AP equal the metrics computed
independently on the same boxes, per-case rows and MLflow logging."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from medimg.cli.main import main
from medimg.config.detection import parse_detection_workflow
from medimg.data.splits import assign_splits
from medimg.detection.cases import load_samples
from medimg.detection.model_folder import load_detector, save_detector
from medimg.detection.network import build_detector
from medimg.detection.plan import plan_detection
from medimg.detection.predict import predict_boxes
from medimg.detection.scoring import detection_scores, scan_boxes
from medimg.detection.synthetic import DETECTION_GRID, write_detection_study


def _study(tmp_path: Path, monkeypatch) -> tuple[Path, object]:
    monkeypatch.chdir(tmp_path)
    manifest = write_detection_study(
        tmp_path / "data", cases=6, seed=3, grid=replace(DETECTION_GRID, shape=(32, 32, 16))
    )
    wf = parse_detection_workflow({
        "task": "detection", "data": {"manifest": str(manifest), "split": {"val_fraction": 0.0, "test_fraction": 0.5}},
        "detection": {"box_file": str(tmp_path / "data/boxes.csv"), "n_boot": 50},
        "outputs": {"dir": str(tmp_path / "run")},
    })  # fmt: skip
    plan = plan_detection([(6, 6, 6), (10, 10, 10)], [(1.5, 1.5, 3.0)] * 2, [(32, 32, 16)] * 2)
    torch.manual_seed(0)
    net = build_detector(plan)
    with torch.no_grad():  # an untrained head scores every anchor alike; spread them so boxes differ
        for p in net.network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_detector(net, plan, wf, tmp_path / "run/model"), wf


def test_evaluate_scores_the_studys_test_split_with_the_predicted_boxes(tmp_path, monkeypatch, capsys):
    model, wf = _study(tmp_path, monkeypatch)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = (
        mlflow.MlflowClient(uri).create_run(mlflow.MlflowClient(uri).create_experiment("det")).info.run_id
    )
    (tmp_path / "run/run.json").write_text(json.dumps({"run_id": run_id, "tracking_uri": uri}))
    assert main(["evaluate", str(model), "--json", "--n-boot", "50"]) == 0
    document = json.loads(capsys.readouterr().out)

    frame = assign_splits(pd.read_csv(wf.data.manifest), wf.data.split)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    samples = load_samples(test, Path(wf.data.manifest).parent, box_file=wf.detection.box_file)
    detector, plan, _ = load_detector(model)
    scans = [scan_boxes(s.boxes, predict_boxes(detector, plan, s.image, overlap=wf.detection.overlap), s.image)
             for s in samples]  # fmt: skip
    expected = detection_scores(scans)
    assert document["scans"] == len(samples) >= 2 and document["split"] == "test"
    assert document["scores"] == pytest.approx(expected)
    assert sum(len(s.pred) for s in scans) > 0  # boxes were predicted: the scores compare something
    per_case = pd.read_csv(tmp_path / "run/evaluation/per_case.csv")
    assert list(per_case["case_key"]) == [s.case_key for s in samples]
    assert list(per_case["lesions"]) == [len(s.boxes) for s in samples]
    assert list(per_case["boxes"]) == [len(s.pred) for s in scans]
    assert len(pd.read_csv(tmp_path / "run/evaluation/boxes.csv")) == sum(len(s.pred) for s in scans)
    logged = mlflow.MlflowClient(uri).get_run(run_id).data.metrics
    assert logged["eval_test_froc"] == pytest.approx(expected["froc"])
    assert logged["eval_test_ap_iou0.1"] == pytest.approx(expected["ap@0.1"])


def test_evaluate_refuses_what_detection_does_not_have(tmp_path, monkeypatch, capsys):
    model, _wf = _study(tmp_path, monkeypatch)
    assert main(["evaluate", str(model), "--by", "site"]) == 3
    assert "a detection model takes no --by yet" in capsys.readouterr().err
    assert main(["evaluate", str(model), "--split", "val"]) == 3
    err = capsys.readouterr().err
    assert "no case in split 'val'" in err and "Traceback" not in err
    np.testing.assert_equal((tmp_path / "run/evaluation").exists(), False)

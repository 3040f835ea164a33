"""``medimg predict`` with a detection model folder runs the detection task's cohort runner (the
registry's ``Task.cohort``): boxes per case and for the cohort, the same boxes the library gives;
options detection does not take are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medimg.cli.main import main
from medimg.config.detection import parse_detection_workflow
from medimg.data.synthetic import oblique_affine
from medimg.detection.model_folder import load_detector, save_detector
from medimg.detection.network import build_detector
from medimg.detection.plan import plan_detection
from medimg.detection.predict import predict_boxes
from medimg.inference.predict_cohort import cohort_runner, predict_cohort
from medimg.io.load import load_image
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume


def _model(folder: Path) -> Path:
    torch.manual_seed(0)
    plan = plan_detection([(6, 6, 6), (10, 10, 10)], [(1.5, 1.5, 3.0)] * 2, [(32, 32, 16)] * 2)
    wf = parse_detection_workflow(
        {"task": "detection", "data": {"manifest": "m.csv"}, "detection": {"box_file": "b.csv"}}
    )
    net = build_detector(plan)
    with torch.no_grad():  # an untrained head scores every anchor alike; lift a few so boxes come out
        for p in net.network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_detector(net, plan, wf, folder)


def test_medimg_predict_with_a_detection_model_writes_the_librarys_boxes(tmp_path, capsys):
    model = _model(tmp_path / "model")
    rng = np.random.default_rng(1)
    for i in range(2):
        image = rng.normal(size=(32, 32, 16)).astype(np.float32)
        save_nifti(
            Volume(image, oblique_affine((32, 32, 16), (1.5, 1.5, 3.0), 15.0)), tmp_path / f"in/c{i}.nii.gz"
        )
    assert cohort_runner(str(model)).__name__ == "predict_detection_files"
    assert cohort_runner(str(tmp_path)) is predict_cohort  # not a model folder of a task with its own
    code = main(["predict", str(model), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--json"])
    assert code == 0, capsys.readouterr().err
    document = json.loads(capsys.readouterr().out)
    assert document["done"] == 2 and document["failed"] == 0
    detector, plan, _sha = load_detector(model)
    table = pd.read_csv(tmp_path / "out/boxes.csv")
    for i in range(2):
        written = json.loads((tmp_path / f"out/cases/c{i}/boxes.json").read_text())["boxes"]
        expected = predict_boxes(detector, plan, load_image(tmp_path / f"in/c{i}.nii.gz"))
        assert len(written) == len(expected) == int((table["case_key"] == f"c{i}").sum())
        assert [round(b["score"], 5) for b in written] == [round(b.score, 5) for b in expected]
    assert len(table) > 0  # boxes came out, so the comparison above compared something


def test_options_detection_does_not_take_are_refused_by_name(tmp_path, capsys):
    model = _model(tmp_path / "model")
    (tmp_path / "in").mkdir()
    code = main(["predict", str(model), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--tta"])
    err = capsys.readouterr().err
    assert code == 3 and f"{model}: a detection model does not take --tta" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()

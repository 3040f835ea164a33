"""The README's quickstarts reach their promised quality on CPU, exactly as shipped."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from medimg.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_segmentation_quickstart_dice(capsys):
    assert main(["run", str(ROOT / "workflows/quickstart_seg.yaml")]) == 0
    out = capsys.readouterr().out
    summary = json.loads(Path("runs/quickstart_seg/test_summary.json").read_text())
    assert summary["n_failed"] == 0 and summary["n_cases"] >= 4
    assert summary["test_dice_mean"] >= 0.85, summary
    assert "test_dice_mean" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    info = json.loads(Path("runs/quickstart_seg/run.json").read_text())
    logged = mlflow.MlflowClient(info["tracking_uri"]).get_run(info["run_id"]).data.metrics
    assert logged["test_dice_mean"] == pytest.approx(summary["test_dice_mean"])


@pytest.fixture(scope="module")
def cls_model(tmp_path_factory) -> Path:
    """The classification quickstart, run once in its own folder; its model folder."""
    import os

    root, old = tmp_path_factory.mktemp("quickstart_cls"), os.getcwd()
    os.chdir(root)
    try:
        assert main(["run", str(ROOT / "workflows/quickstart_cls.yaml")]) == 0
    finally:
        os.chdir(old)
    return root / "runs/quickstart_cls/model"


def test_classification_quickstart_auroc(cls_model):
    summary = json.loads((cls_model.parent / "test_summary.json").read_text())
    assert summary["n_failed"] == 0 and summary["test_n_pos"] >= 3 and summary["test_n_neg"] >= 3
    assert summary["test_auroc"] >= 0.9, summary


def test_classification_quickstart_maps_peak_inside_the_lesion(cls_model, tmp_path):
    """Issue 5's pointing game on the shipped classifier (docs/explain.md).

    Twenty positive cases the model never saw (another study seed); the peak of each map must
    fall inside the lesion mask, the structure that decides the class, on at least 90% of them:
    Grad-CAM at the network's default layer, SmoothGrad and integrated gradients.
    """
    import torch

    from benchmarks.lesion_cases import synthetic_lesion_cases
    from medimg.explain import compute_saliency
    from medimg.inference.model_io import load_trained

    torch.set_num_threads(2)
    tm = load_trained(str(cls_model))
    model = tm.model.eval()
    hits = {"gradcam": 0, "smoothgrad": 0, "integrated-gradients": 0}
    cases = synthetic_lesion_cases(tmp_path, 20, tm.preprocess)
    for case in cases:
        assert case.structure is not None and case.structure.any()
        for method in hits:
            peak = compute_saliency(model, case.tensor, method, target_class=1).peak_index
            hits[method] += bool(case.structure[peak])
    assert all(n >= 0.9 * len(cases) for n in hits.values()), hits

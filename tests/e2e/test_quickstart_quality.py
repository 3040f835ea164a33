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


def test_classification_quickstart_auroc():
    assert main(["run", str(ROOT / "workflows/quickstart_cls.yaml")]) == 0
    summary = json.loads(Path("runs/quickstart_cls/test_summary.json").read_text())
    assert summary["n_failed"] == 0 and summary["test_n_pos"] >= 3 and summary["test_n_neg"] >= 3
    assert summary["test_auroc"] >= 0.9, summary

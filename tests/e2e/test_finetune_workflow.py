"""Fine-tuning from a previous run's weights through a workflow: load report and schedule in MLflow."""

from __future__ import annotations

import json

import mlflow
import pytest
from _tiny import tiny_workflow, train_tiny, write_wf

from medimg.cli.main import main
from medimg.errors import EXIT_INPUT_ERROR


def test_workflow_finetunes_from_pretrained_weights(tmp_path, capsys):
    model_dir = train_tiny(tmp_path)
    wf = tiny_workflow()
    wf["model"]["pretrained"] = {"source": str(model_dir / "model.safetensors"), "min_encoder_fraction": 0.99}
    wf["finetune"] = {"freeze_encoder_epochs": 1, "backbone_lr_mult": 0.1}
    wf["outputs"]["dir"] = "runs/finetuned"
    import os

    os.chdir(tmp_path)
    assert main(["run", str(write_wf(tmp_path / "ft.yaml", wf))]) == 0
    info = json.loads((tmp_path / "runs/finetuned/run.json").read_text())
    client = mlflow.MlflowClient(info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.data.metrics["pretrained/encoder_fraction"] == 1.0
    assert run.data.tags["medimg.pretrained_source"].endswith("model.safetensors")
    assert len(run.data.tags["medimg.pretrained_sha256"]) == 64
    assert (
        run.data.tags["finetune.frozen_at_epoch"] == "0"
        and run.data.tags["finetune.unfrozen_at_epoch"] == "1"
    )
    enc = [m.value for m in client.get_metric_history(run.info.run_id, "lr/encoder")]
    head = [m.value for m in client.get_metric_history(run.info.run_id, "lr/head")]
    assert enc and head and enc[0] == pytest.approx(head[0] * 0.1)


def test_finetune_schedule_keys_point_to_optim(tmp_path, capsys):
    wf = tiny_workflow()
    wf["finetune"] = {"warmup_epochs": 3}
    assert main(["run", str(write_wf(tmp_path / "bad.yaml", wf)), "--check"]) == EXIT_INPUT_ERROR
    assert "optim.warmup_epochs" in capsys.readouterr().err

"""Reproducibility: bit-exact reproduction, resume after SIGKILL, k-fold child runs, DDP on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from _run_kill import kill_at_checkpoint
from _tiny import tiny_workflow, write_wf

from medimg.cli.main import main
from medimg.errors import EXIT_INPUT_ERROR

pytestmark = pytest.mark.slow


def _det_workflow(epochs: int, out: str, **trainer) -> dict:
    wf = tiny_workflow()
    wf["trainer"].update({"max_epochs": epochs, "deterministic": True, "accelerator": "cpu", **trainer})
    wf["outputs"]["dir"] = out
    return wf


def _info(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def test_reproduce_is_bit_exact_and_refuses_changed_data(tmp_path, capsys):
    wf = write_wf(tmp_path / "wf.yaml", _det_workflow(3, "runs/orig"))
    assert main(["run", str(wf)]) == 0
    info = _info(tmp_path / "runs/orig")
    capsys.readouterr()
    assert main(["reproduce", info["run_id"], "--tracking-uri", info["tracking_uri"]]) == 0
    out = capsys.readouterr().out
    assert "REPRODUCED: identical" in out and "test_dice_mean" in out
    client = mlflow.MlflowClient(info["tracking_uri"])
    orig = client.get_run(info["run_id"]).data.metrics
    repro_runs = client.search_runs(
        [client.get_run(info["run_id"]).info.experiment_id], f"tags.`medimg.reproduces` = '{info['run_id']}'"
    )
    assert len(repro_runs) == 1
    rep = repro_runs[0].data
    assert (
        rep.tags["medimg.weights_sha256"] == client.get_run(info["run_id"]).data.tags["medimg.weights_sha256"]
    )
    for key in ("test_dice_1", "test_dice_2", "test_hd95_1"):
        assert rep.metrics[key] == orig[key]  # exact equality
    # a changed data file is named, and nothing is retrained
    img = next((tmp_path / "data/synth/cases").rglob("image.nii.gz"))
    img.write_bytes(img.read_bytes()[:-10] + b"0123456789")
    assert main(["reproduce", info["run_id"], "--tracking-uri", info["tracking_uri"]]) == EXIT_INPUT_ERROR
    err = capsys.readouterr().err
    assert "the data changed since the run" in err and str(img) in err and "content changed" in err


def _epoch(ckpt: Path) -> int:
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"])


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = write_wf(tmp_path / "straight.yaml", _det_workflow(6, "runs/straight"))
    killed = write_wf(tmp_path / "killed.yaml", _det_workflow(6, "runs/killed"))
    cmd = [sys.executable, "-m", "medimg", "run"]
    assert subprocess.run([*cmd, str(straight)], cwd=tmp_path, env=env, capture_output=True).returncode == 0
    ckpt = tmp_path / "runs/killed/checkpoints/last.ckpt"
    kill_at_checkpoint(
        [*cmd, str(killed)],
        tmp_path,
        env,
        ckpt,
        lambda c: _epoch(c) >= 1,
        "no checkpoint of the wanted epoch appeared",
    )
    first_id = _info(tmp_path / "runs/killed")["run_id"]
    assert _info(tmp_path / "runs/killed")["status"] == "running"
    res = subprocess.run(
        [*cmd, str(killed), "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _info(tmp_path / "runs/straight"), _info(tmp_path / "runs/killed")
    assert b["run_id"] == first_id and b["status"] == "finished"  # the same MLflow run continued
    assert a["weights_sha256"] == b["weights_sha256"]  # identical final weights
    client = mlflow.MlflowClient(a["tracking_uri"])
    ma, mb = client.get_run(a["run_id"]).data.metrics, client.get_run(b["run_id"]).data.metrics
    for key in ("test_dice_mean", "test_hd95_mean", "val_dice", "train_loss"):
        assert ma[key] == mb[key], key
    assert client.get_run(b["run_id"]).info.status == "FINISHED"


def test_kfold_runs_children_under_a_parent(tmp_path, capsys):
    wf = tiny_workflow()
    wf["trainer"]["max_epochs"] = 1
    wf["data"]["split"] = {"test_fraction": 0.25, "seed": 0}
    assert main(["run", str(write_wf(tmp_path / "cv.yaml", wf)), "--folds", "2"]) == 0
    parent = capsys.readouterr().out.strip().splitlines()[-1].split()[-1]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'runs/mlflow.db'}")
    run = client.get_run(parent)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2
    vals = [c.data.metrics["test_dice_mean"] for c in children]
    assert run.data.metrics["test_dice_mean_mean"] == pytest.approx(sum(vals) / 2)
    assert run.data.metrics["test_dice_mean_ci95_low"] <= run.data.metrics["test_dice_mean_mean"]


def test_ddp_two_cpu_processes_log_one_set_of_metrics(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    single = write_wf(tmp_path / "single.yaml", _det_workflow(2, "runs/single", deterministic=False))
    ddp = write_wf(
        tmp_path / "ddp.yaml", _det_workflow(2, "runs/ddp", deterministic=False, strategy="ddp", devices=2)
    )
    cmd = [sys.executable, "-m", "medimg", "run"]
    for wf in (single, ddp):
        res = subprocess.run(
            [*cmd, str(wf)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert res.returncode == 0, res.stderr[-3000:]
    a, b = _info(tmp_path / "runs/single"), _info(tmp_path / "runs/ddp")
    client = mlflow.MlflowClient(a["tracking_uri"])
    exp = client.get_run(a["run_id"]).info.experiment_id
    assert len(client.search_runs([exp])) == 2  # the two DDP ranks made one run between them
    assert len(client.get_metric_history(b["run_id"], "train_loss")) == 2  # once per epoch, not per rank
    assert len(client.get_metric_history(b["run_id"], "val_dice")) == 2
    ma, mb = client.get_run(a["run_id"]).data.metrics, client.get_run(b["run_id"]).data.metrics
    assert abs(ma["test_dice_mean"] - mb["test_dice_mean"]) < 0.15
    assert abs(ma["train_loss"] - mb["train_loss"]) < 0.25

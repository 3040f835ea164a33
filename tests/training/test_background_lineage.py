"""The lineage recorded beside the first training steps: complete before the first checkpoint, its error fails the run.

A tiny study (one epoch) runs through :func:`run_workflow`; ``pip freeze`` is replaced by a stand-in
that blocks until the first training batch has started, so the test sees the lineage still being
recorded while training runs, and the checkpoint held until it is complete.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import lightning.pytorch as pl
import mlflow
import pandas as pd
import pytest
import yaml
from _tiny import tiny_workflow

from medimg.config.load import config_hash, parse_workflow
from medimg.data.manifest import manifest_hash
from medimg.training import lineage
from medimg.training.lineage import sha256_path
from medimg.training.run import run_workflow
from medimg.training.stages.prepare import prepare
from medimg.training.stages.track_background import Background, BackgroundError

FROZEN = "stand-in==1.0\n"


def test_background_error_names_the_work_and_its_reason_every_time() -> None:
    def boom() -> None:
        raise OSError("No space left on device: 'requirements.txt'")

    job = Background("the run's lineage", boom)
    for _ in range(2):  # a second wait raises again: no caller can miss it
        with pytest.raises(BackgroundError) as err:
            job.wait()
        assert str(err.value) == (
            "the run's lineage could not be recorded: OSError: No space left on device: 'requirements.txt'"
        )
        assert isinstance(err.value.__cause__, OSError)
    assert job.done and job.seconds is not None and job.seconds >= 0
    ok = Background("nothing", lambda: None)
    ok.wait()
    assert ok.done and ok.error is None


class FirstBatch(pl.Callback):
    """At the first training batch: notes what the lineage had written, then lets ``pip freeze`` finish."""

    def __init__(self, out: Path, release: threading.Event) -> None:
        self.out, self.release, self.seen = out, release, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0 and not self.seen:
            self.seen = {
                "run.json": (self.out / "run.json").is_file(),
                "requirements.txt": (self.out / "requirements.txt").is_file(),
                "last.ckpt": (self.out / "checkpoints/last.ckpt").is_file(),
            }
            self.release.set()


def _blocked_freeze(release: threading.Event, fail: bool):
    def freeze() -> str:
        assert release.wait(120), "the first training batch never started"
        if fail:
            raise OSError("No space left on device: 'requirements.txt'")
        return FROZEN

    return freeze


def _wf(out: str) -> object:
    raw = tiny_workflow(trainer={"max_epochs": 1}, outputs={"dir": out})
    return parse_workflow(raw, source="test_background_lineage")


def test_lineage_beside_training_is_complete_before_the_checkpoint(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs/ok"
    release = threading.Event()
    monkeypatch.setattr(lineage, "pip_freeze", _blocked_freeze(release, fail=False))
    first = FirstBatch(out, release)
    wf = _wf("runs/ok")
    res = run_workflow(wf, callbacks=[first])
    # training started while the lineage was still being recorded, with run.json already naming the run
    assert first.seen == {"run.json": True, "requirements.txt": False, "last.ckpt": False}
    # ... and the first checkpoint was written only once it was complete
    ckpt = out / "checkpoints/last.ckpt"
    assert (out / "requirements.txt").stat().st_mtime_ns <= ckpt.stat().st_mtime_ns
    run = mlflow.MlflowClient(res.tracking_uri).get_run(res.run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and tags["medimg.lineage"] == "complete"
    resolved = parse_workflow(yaml.safe_load((out / "workflow.resolved.yaml").read_text()), source="resolved")
    assert tags["medimg.config_hash"] == config_hash(resolved)
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 8 and set(manifest["split"]) == {"train", "val", "test"}
    assert tags["medimg.manifest_hash"] == manifest_hash(prepare(wf).df)
    hashes = pd.read_csv(out / "file_hashes.csv")
    assert len(hashes) == 16 and all(sha256_path(r.path) == r.sha256 for r in hashes.itertuples())
    assert (out / "requirements.txt").read_text() == FROZEN
    assert json.loads((out / "environment.json").read_text())["medimg"] == tags["medimg.version"]
    assert run.data.params["optim.batch_size"] == str(resolved.optim.batch_size)
    assert "medimg.plan" in tags and len(run.inputs.dataset_inputs) == 3
    client = mlflow.MlflowClient(res.tracking_uri)
    logged = {a.path for a in client.list_artifacts(res.run_id)}
    for folder in ("data", "environment"):
        logged |= {a.path for a in client.list_artifacts(res.run_id, folder)}
    expected = {"data/manifest.csv", "data/file_hashes.csv", "environment/environment.json"}
    assert {"workflow.resolved.yaml", "environment/requirements.txt", *expected} <= logged
    local = Path(client.download_artifacts(res.run_id, "environment/requirements.txt", str(tmp_path)))
    assert local.read_text() == FROZEN


def test_lineage_error_fails_the_run_naming_it_and_resume_records_it(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs/bad"
    release = threading.Event()
    monkeypatch.setattr(lineage, "pip_freeze", _blocked_freeze(release, fail=True))
    wf = _wf("runs/bad")
    with pytest.raises(BackgroundError, match="No space left on device: 'requirements.txt'"):
        run_workflow(wf, callbacks=[FirstBatch(out, release)])
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed"
    assert info["reason"] == (
        "BackgroundError: the run's lineage could not be recorded: "
        "OSError: No space left on device: 'requirements.txt'"
    )
    client = mlflow.MlflowClient(info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.info.status == "FAILED" and run.data.tags["medimg.failure"] == info["reason"]
    assert run.data.tags["medimg.lineage"] == "recording"
    assert not (out / "checkpoints/last.ckpt").exists() and not (out / "model").exists()
    # --resume reopens the same run and records the lineage the failure left unfinished
    monkeypatch.setattr(lineage, "pip_freeze", lambda: FROZEN)
    res = run_workflow(wf, resume=True)
    assert res.run_id == info["run_id"]
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["medimg.lineage"] == "complete"
    assert (out / "requirements.txt").read_text() == FROZEN
    assert len(run.data.tags["medimg.config_hash"]) == 64

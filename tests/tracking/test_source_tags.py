"""A run carries MLflow's source tags (git commit, program, LOCAL), read back from a SQLite store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow

from medimg.training.tracking import git_state, make_logger, source_tags

ROOT = Path(__file__).resolve().parents[2]


def _head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_new_run_has_mlflow_source_tags(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = make_logger(uri, "source-tags", "run-a", tags={"medimg.task": "classification"})
    run = mlflow.MlflowClient(uri).get_run(logger.run_id)
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == _head() and len(_head()) == 40
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] == sys.argv[0]  # the program as started, as MLflow records it
    assert tags["medimg.task"] == "classification"
    assert "medimg.git_commit" not in tags
    assert run.info.run_name == "run-a"


def test_caller_tags_win_and_a_resumed_run_keeps_its_tags(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = make_logger(uri, "source-tags", "run-b", tags={"mlflow.source.name": "workflows/study.yaml"})
    run_id = first.run_id
    resumed = make_logger(uri, "source-tags", "run-b", run_id=run_id)
    assert resumed.run_id == run_id
    tags = mlflow.MlflowClient(uri).get_run(run_id).data.tags
    assert tags["mlflow.source.name"] == "workflows/study.yaml"


def test_outside_a_git_checkout(tmp_path: Path) -> None:
    tags = source_tags(tmp_path)
    assert "mlflow.source.git.commit" not in tags and tags["mlflow.source.type"] == "LOCAL"
    assert git_state(tmp_path) == {"git_dirty": "unknown"}
    assert set(git_state()) == {"git_dirty"} and git_state()["git_dirty"] in ("true", "false")

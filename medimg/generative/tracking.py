"""MLflow run and lineage of a generative study, as the other tasks record them.

The run carries the resolved workflow (params), its hash, the manifest hash and each file's
sha256, the environment, the seed and MLflow's source tags; ``outputs.dir`` keeps the same files
(``workflow.resolved.yaml``, ``manifest.csv``, ``file_hashes.csv``, ``environment.json``) and
``run.json`` names the MLflow run from its first moment.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medimg import __version__
from medimg.config.generative import GenerativeWorkflow
from medimg.config.load import config_hash, workflow_to_dict, workflow_to_yaml
from medimg.io.atomic import atomic_write_text
from medimg.io.csvsafe import escape_frame


@dataclass
class GenerativeRun:
    """An open MLflow run: its tracking URI, client and id."""

    uri: str
    client: Any
    run_id: str
    out: Path

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log finite numbers (NaN, e.g. an AUROC without both classes, is left out)."""
        import math

        import mlflow

        items = [
            mlflow.entities.Metric(k, float(v), int(1000 * time.time()), step or 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(float(v))
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """Log a file, or every file of a folder, under ``folder`` of the run's artifacts."""
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, str(path), folder)
        else:
            self.client.log_artifact(self.run_id, str(path), folder)

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """End the run (``FINISHED`` or ``FAILED`` with the reason as a tag) and update ``run.json``."""
        if reason:
            self.client.set_tag(self.run_id, "medimg.failure", reason[:5000])
        self.client.set_terminated(self.run_id, status)
        info = {"run_id": self.run_id, "tracking_uri": self.uri, "status": status.lower()}
        if reason:
            info["reason"] = reason[:5000]
        atomic_write_text(self.out / "run.json", json.dumps(info, indent=2))


def start_run(wf: GenerativeWorkflow, df: pd.DataFrame, out: Path) -> GenerativeRun:
    """Create the MLflow run of ``wf`` and record its lineage (``df``: the manifest with splits).

    Example:
        >>> run = start_run(wf, df, Path("runs/anomaly"))  # doctest: +SKIP
    """
    import mlflow

    from medimg.telemetry import telemetry_off_by_default
    from medimg.training.tracking import artifact_location, resolve_tracking_uri, source_tags

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    telemetry_off_by_default()
    uri = resolve_tracking_uri(wf.tracking.uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(wf.tracking.experiment)
    exp_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(
            wf.tracking.experiment, artifact_location=artifact_location(uri, wf.tracking.experiment)
        )
    )
    run_id = client.create_run(
        exp_id, run_name=wf.tracking.run_name or wf.name, tags=source_tags()
    ).info.run_id
    run = GenerativeRun(uri, client, run_id, out)
    atomic_write_text(
        out / "run.json", json.dumps({"run_id": run_id, "tracking_uri": uri, "status": "running"})
    )
    _log_lineage(run, wf, df)
    return run


def _log_lineage(run: GenerativeRun, wf: GenerativeWorkflow, df: pd.DataFrame) -> None:
    import mlflow

    from medimg.data.manifest import manifest_hash
    from medimg.training.lineage import environment, file_hashes
    from medimg.training.tracking import flatten, git_state

    params = flatten(workflow_to_dict(wf))
    run.client.log_batch(run.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
    hashes = file_hashes(df, ("image",))
    env = environment()
    tags = {
        "medimg.version": __version__,
        "medimg.config_hash": config_hash(wf),
        "medimg.manifest_hash": manifest_hash(df, ("case_key", "patient_key", "image")),
        "medimg.task": wf.task,
        "medimg.workflow": wf.name,
        "medimg.seed": str(wf.seed),
        "medimg.torch": env["torch"],
        "medimg.hardware": f"{env['machine']} cpus={env['cpu_count']} gpus={env['gpus'] or 'none'}",
        **{f"medimg.{k}": v for k, v in git_state().items()},
    }
    run.client.log_batch(run.run_id, tags=[mlflow.entities.RunTag(k, str(v)[:5000]) for k, v in tags.items()])
    out = run.out
    atomic_write_text(out / "workflow.resolved.yaml", workflow_to_yaml(wf))
    saved = df.drop(columns=[c for c in ("target",) if c in df])
    atomic_write_text(out / "manifest.csv", escape_frame(saved, ("image",)).to_csv(index=False))
    atomic_write_text(out / "file_hashes.csv", escape_frame(hashes, ("path",)).to_csv(index=False))
    atomic_write_text(out / "environment.json", json.dumps(env, indent=2))
    run.log_artifact(out / "workflow.resolved.yaml")
    for name in ("manifest.csv", "file_hashes.csv"):
        run.log_artifact(out / name, "data")
    run.log_artifact(out / "environment.json", "environment")

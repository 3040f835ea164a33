"""Stage 3, track: the MLflow run (new, or resumed from ``run.json``) and the study's lineage.

Every run records the resolved workflow and its hash, the manifest (one MLflow dataset per split,
with each file's sha256), the code version, the environment and the seeds, and leaves the same files
in ``outputs.dir``. ``run.json`` there names the MLflow run from the first moment, so a killed run
resumes (``--resume``) into the same MLflow run.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from medimg import __version__
from medimg.config.load import config_hash, workflow_to_dict, workflow_to_yaml
from medimg.config.schema import Workflow
from medimg.errors import ConfigError
from medimg.io.atomic import atomic_write_text
from medimg.io.csvsafe import escape_frame
from medimg.tasks import get_task
from medimg.training.stages.records import PreparedData, StudyPlan, TrackedRun
from medimg.training.stages.track_background import Background, BackgroundError

log = logging.getLogger(__name__)

SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
LINEAGE_TAG = "medimg.lineage"  # "complete" once the whole lineage is recorded


def track(
    plan: StudyPlan,
    data: PreparedData,
    resume: bool,
    parent_run_id: str | None,
    store: Background | None = None,
    background: bool = False,
) -> TrackedRun:
    """Start (or, with ``resume``, reopen) the MLflow run; rank 0 writes ``run.json`` and the lineage.

    ``store`` is the job started beside the caching (:func:`warm_store`: the schema template a new
    SQLite store is copied from, when missing), waited for here before the store is opened. With ``background`` the lineage is recorded in a thread, after ``run.json``
    names the run: the returned run's ``lineage`` job, which the fit waits for before its first
    checkpoint (:class:`WaitBeforeCheckpoint`) and whose error fails the run. Without it the
    lineage is recorded before this returns. A resumed run records it again only if the killed
    run had not finished it (its ``medimg.lineage`` tag still says ``recording``).

    Example:
        >>> run = track(plan, data, resume=False, parent_run_id=None)  # doctest: +SKIP
        >>> json.loads((data.out / "run.json").read_text())["status"]  # doctest: +SKIP
        'running'
    """
    import mlflow

    from medimg.training.tracking import resolve_tracking_uri

    wf, out = plan.wf, data.out
    uri = resolve_tracking_uri(wf.tracking.uri)
    if store is not None:
        store.wait()  # its own errors are only logged: _start_run opens the store
    logger = _start_run(wf, out, uri, resume, parent_run_id)
    run_id = logger.run_id if data.rank == 0 else None
    client = mlflow.MlflowClient(uri)
    run = TrackedRun(uri=uri, logger=logger, client=client, run_id=run_id)
    if data.rank != 0:
        return run
    atomic_write_text(
        out / "run.json", json.dumps({"run_id": run_id, "tracking_uri": uri, "status": "running"})
    )
    plan_tag = {"medimg.plan": plan.plan.explain()}
    if resume and client.get_run(run_id).data.tags.get(LINEAGE_TAG) != "recording":
        client.log_batch(
            run_id, tags=_tags(plan_tag)
        )  # lineage recorded before the kill (or by an older medimg)
        return run
    fingerprint = _read_fingerprint(wf)  # a refused fingerprint file stops the run now

    assert run_id is not None

    def record() -> None:
        _log_lineage(client, run_id, wf, data.df, out, plan.caveats, fingerprint)
        client.log_batch(run_id, tags=_tags({**plan_tag, LINEAGE_TAG: "complete"}))

    if background:
        run.lineage = Background("the run's lineage", record)
    else:
        record()
    return run


def mark_failed(run: TrackedRun, out: Path, exc: BaseException) -> None:
    """Record a failed run in MLflow (status FAILED, the reason as a tag) and in ``run.json``."""
    from medimg.errors import find_medimg_error

    if run.lineage is not None:  # let the lineage end before the run does (its own error is ``exc``)
        with contextlib.suppress(BackgroundError):
            run.lineage.wait()
    cause = find_medimg_error(exc) or exc
    reason = f"{type(cause).__name__}: {cause}"[:5000]
    try:
        run.client.set_tag(run.run_id, "medimg.failure", reason)
        run.client.set_terminated(run.run_id, "FAILED")
    except Exception as err:  # pragma: no cover - the tracking server is gone too
        log.warning("could not mark MLflow run %s FAILED: %s", run.run_id, err)
    atomic_write_text(
        out / "run.json",
        json.dumps(
            {"run_id": run.run_id, "tracking_uri": run.uri, "status": "failed", "reason": reason}, indent=2
        ),
    )


def _start_run(wf: Workflow, out: Path, uri: str, resume: bool, parent_run_id: str | None) -> Any:
    """The MLflow logger: a new run, or (``resume``) the run named in ``out/run.json``."""
    from medimg.training.tracking import make_logger

    info_path = out / "run.json"
    run_id = None
    if resume:
        if not info_path.is_file():
            raise ConfigError(f"--resume: {info_path} not found; nothing to resume in outputs.dir {out}")
        run_id = json.loads(info_path.read_text())["run_id"]
    tags = {LINEAGE_TAG: "recording"}  # "complete" once recorded; a resume records it again until then
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    return make_logger(uri, wf.tracking.experiment, wf.tracking.run_name or wf.name, run_id=run_id, tags=tags)


def _tags(tags: dict[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)[:5000]) for k, v in tags.items()]


def _log_lineage(
    client: Any,
    run_id: str,
    wf: Workflow,
    df: pd.DataFrame,
    out: Path,
    caveats: list[str],
    fingerprint: tuple[Path, str] | None,
) -> None:
    """Params, lineage tags, the files in ``out`` (workflow, manifest, hashes, environment) and their artifacts."""
    from mlflow.entities import Param

    from medimg.training.lineage import environment, file_hashes, pip_freeze
    from medimg.training.tracking import flatten

    client.log_batch(run_id, params=[Param(k, v) for k, v in flatten(workflow_to_dict(wf)).items()])
    hashes = file_hashes(df)
    env = environment()
    client.log_batch(run_id, tags=_tags(_lineage_tags(wf, df, caveats, env)))
    atomic_write_text(out / "workflow.resolved.yaml", workflow_to_yaml(wf))
    saved = df.drop(columns=["target"])
    # label paths resolved like image paths, so the saved manifest stands alone
    if get_task(wf.task).target == "mask":
        saved[wf.data.label_column] = df["target"]
    atomic_write_text(out / "manifest.csv", escape_frame(saved, ("image", "target")).to_csv(index=False))
    atomic_write_text(out / "file_hashes.csv", escape_frame(hashes, ("path",)).to_csv(index=False))
    atomic_write_text(out / "environment.json", json.dumps(env, indent=2))
    atomic_write_text(out / "requirements.txt", pip_freeze())
    client.log_artifact(run_id, str(out / "workflow.resolved.yaml"))
    for name in ("manifest.csv", "file_hashes.csv"):
        client.log_artifact(run_id, str(out / name), "data")
    for name in ("environment.json", "requirements.txt"):
        client.log_artifact(run_id, str(out / name), "environment")
    if fingerprint is not None:
        client.log_artifact(run_id, str(fingerprint[0]), "data")
        client.set_tag(run_id, "medimg.fingerprint_sha256", fingerprint[1])
    try:
        _log_datasets(client, run_id, wf, saved, hashes)
    except Exception as exc:  # pragma: no cover - older/limited tracking servers
        log.warning("could not log the manifest as MLflow datasets: %s", exc)


def _lineage_tags(wf: Workflow, df: pd.DataFrame, caveats: list[str], env: dict[str, Any]) -> dict[str, Any]:
    """The run's ``medimg.*`` lineage tags: versions, hashes, seed, determinism, hardware, git state."""
    from medimg.data.manifest import manifest_hash
    from medimg.training.tracking import git_state

    return {
        "medimg.version": __version__,
        "medimg.config_hash": config_hash(wf),
        "medimg.manifest_hash": manifest_hash(df),
        "medimg.task": wf.task,
        "medimg.workflow": wf.name,
        "medimg.seed": str(wf.seed),
        "medimg.deterministic": str(wf.trainer.deterministic).lower(),
        "medimg.determinism_caveats": " | ".join(caveats) or "none",
        "medimg.torch": env["torch"],
        "medimg.cuda": env["cuda"],
        "medimg.cudnn": env["cudnn"],
        "medimg.hardware": f"{env['machine']} cpus={env['cpu_count']} gpus={env['gpus'] or 'none'}",
        **{f"medimg.{k}": v for k, v in git_state().items()},
    }


def _read_fingerprint(wf: Workflow) -> tuple[Path, str] | None:
    """The dataset fingerprint of ``data.fingerprint`` (path, sha256), read and checked now; ``None`` when unset.

    Logged with the lineage as artifact ``data/<name>`` and tag ``medimg.fingerprint_sha256``.
    """
    if not wf.data.fingerprint:
        return None
    from medimg.data.fingerprint import fingerprint_hash, read_fingerprint

    path = Path(wf.data.fingerprint)
    return path, fingerprint_hash(read_fingerprint(path))  # a missing or foreign file is refused, naming it


def _log_datasets(client: Any, run_id: str, wf: Workflow, saved: pd.DataFrame, hashes: pd.DataFrame) -> None:
    """One MLflow dataset per split of the saved manifest (contexts in :data:`SPLIT_CONTEXTS`).

    Each digest is the content hash of that split's own files, so two runs that trained on the
    same bytes share the training dataset even when their test sets differ. An empty split
    (``test_fraction: 0``) logs no dataset.
    """
    import warnings

    import mlflow
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    from medimg.data.manifest import manifest_hash

    inputs = []
    source = str(Path(wf.data.manifest).resolve())
    for split, context in SPLIT_CONTEXTS.items():
        rows = saved[saved["split"] == split].reset_index(drop=True)
        if rows.empty:
            continue
        own = hashes[hashes["case_key"].isin(rows["case_key"])]
        with warnings.catch_warnings():  # MLflow's schema hints about integer columns
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(
                rows,
                source=source,
                name=f"{wf.name}-{split}",
                digest=manifest_hash(own, ("case_key", "role", "sha256"))[:32],
            )
            entity = ds._to_mlflow_entity()
        inputs.append(DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    # through the client, not mlflow.start_run: resuming the run fluently would end it FINISHED mid-training
    client.log_inputs(run_id, datasets=inputs)

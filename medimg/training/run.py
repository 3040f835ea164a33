"""A study run: one straight pipeline of stages (:mod:`medimg.training.stages`), each with typed records.

prepare (manifest, splits) → plan (seeds, cache, batch, loaders) → track (MLflow run, lineage) →
build (task + pretrained weights) → fit (Lightning, resumable) → export (model folder) →
score (test split) → register (pyfunc, FINISHED). A killed run resumes (``--resume``) into the
same MLflow run, which ``run.json`` in ``outputs.dir`` names from the first moment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from medimg import __version__
from medimg.config.schema import Workflow
from medimg.training.stages.build import build
from medimg.training.stages.export import export
from medimg.training.stages.fit import fit
from medimg.training.stages.plan import plan_study
from medimg.training.stages.postprocess import postprocess
from medimg.training.stages.prepare import prepare, prepare_data
from medimg.training.stages.records import PreparedData, RunResult, TrackedRun
from medimg.training.stages.register import register
from medimg.training.stages.score import score
from medimg.training.stages.track import mark_failed, track
from medimg.training.stages.track_background import BackgroundError, WaitBeforeCheckpoint, warm_store
from medimg.training.tracking import resolve_tracking_uri

__all__ = ["RunResult", "prepare_data", "run_workflow"]

log = logging.getLogger(__name__)


def run_workflow(
    wf: Workflow, resume: bool = False, parent_run_id: str | None = None, callbacks: Sequence[Any] = ()
) -> RunResult:
    """Train and score the study described by ``wf``; return the MLflow run and test metrics.

    ``callbacks`` are extra Lightning callbacks for the fit (``medimg tune`` prunes with one).

    Example:
        >>> res = run_workflow(load_workflow("workflows/quickstart_seg.yaml"))  # doctest: +SKIP
        >>> res.metrics["test_dice_mean"]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    log.info("medimg %s: study %s (%s)", __version__, wf.name, wf.task)
    data = prepare(wf)
    store = warm_store(resolve_tracking_uri(wf.tracking.uri))  # a missing schema template, beside the caching
    plan = plan_study(wf, data)
    run = track(plan, data, resume, parent_run_id, store, background=True)  # lineage beside the fit
    built = build(plan, data, run, resume)
    fitted = fit(plan, data, run, built, resume, [*callbacks, WaitBeforeCheckpoint(run.lineage)])
    if run.lineage is not None:  # complete (or its error raised) before anything is exported
        _wait_lineage(run, data)
    if fitted.rank != 0:  # only rank 0 exports, scores and registers
        return RunResult(
            "", run.uri, data.out, {}, pd.DataFrame(), data.out / "model", time.perf_counter() - t0
        )
    exported = postprocess(plan.wf, data, run, export(plan.wf, data, run, fitted))
    scores = score(plan.wf, data, run, exported)
    return register(plan.wf, data, run, exported, scores, t0)


def _wait_lineage(run: TrackedRun, data: PreparedData) -> None:
    """Wait for the lineage recorded beside the fit; its error marks the run FAILED and is raised."""
    try:
        run.lineage.wait()
    except BackgroundError as exc:
        mark_failed(run, data.out, exc)
        raise


def _failures(per_case: pd.DataFrame | None) -> list[dict[str, str]]:
    """Test cases that could not be scored, with their reason (the ``error`` column of the per-case table)."""
    if per_case is None or "error" not in per_case:
        return []
    failed = per_case[per_case["error"].notna()]
    return [{"case_key": str(r.case_key), "reason": str(r.error)} for r in failed.itertuples()]


def run_and_report(wf: Workflow, *, resume: bool = False) -> tuple[dict[str, Any], list[str], int]:
    """Run the study ``wf`` (:func:`run_workflow`), as ``medimg run`` does.

    Returns the result document (run, status, weights, metrics, failed cases), its text lines and
    the exit code (1 when some test cases could not be scored).
    """
    import json

    res = run_workflow(wf, resume=resume)
    info_path = res.out_dir / "run.json"  # what the run recorded: status, weights sha256, model URI
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    per_case_csv = res.out_dir / "test_per_case.csv"
    document = {
        "workflow": wf.name, "run_id": res.run_id, "tracking_uri": res.tracking_uri, "status": info.get("status"),
        "out_dir": str(res.out_dir), "model_dir": str(res.model_dir), "weights_sha256": info.get("weights_sha256"),
        "per_case_csv": str(per_case_csv) if per_case_csv.is_file() else None, "seconds": round(res.seconds, 3),
        "metrics": dict(sorted(res.metrics.items())), "failures": _failures(res.per_case), "model_uri": info.get("model_uri"),
    }  # fmt: skip
    lines = [f"\n== {wf.name}: finished in {res.seconds:.0f} s =="]
    lines += study_lines(res.metrics, res.out_dir, res.run_id, res.tracking_uri)
    return document, lines, 1 if int(res.metrics.get("n_failed", 0)) else 0


def study_lines(metrics: dict[str, float], out_dir: Any, run_id: str, tracking_uri: str) -> list[str]:
    """The text ``medimg run`` prints after a study: its metrics, outputs and MLflow run.

    Example:
        >>> study_lines({"x": 0.5}, "runs/a", "r1", "sqlite:///m.db")[:2]
        ['  x                            0.5000', '  outputs:       runs/a']
    """
    lines = [f"  {key:28s} {metrics[key]:.4f}" for key in sorted(metrics)]
    lines += [f"  outputs:       {out_dir}", f"  MLflow run:    {run_id}"]
    ui = f"mlflow ui --backend-store-uri {tracking_uri}"
    return [*lines, f"  MLflow store:  {tracking_uri}", f"  open the UI:   {ui}"]

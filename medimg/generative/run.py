"""The library entry of the generative tasks: one study run, tracked in MLflow like the others.

prepare (outputs folder, synthetic study when asked, manifest read and checked, patient-level
splits) → track (MLflow run, lineage) → the task's study (:mod:`medimg.generative.anomaly_study`
or :mod:`medimg.generative.superres_study`, :mod:`medimg.generative.synthesis_study`) → finish (run FINISHED, or FAILED with the reason).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medimg.config.generative import GenerativeWorkflow
from medimg.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class GenerativeResult:
    """What a generative study run produced."""

    run_id: str
    tracking_uri: str
    out_dir: Path
    metrics: dict[str, float]
    per_case: pd.DataFrame
    seconds: float


def _anomaly_cases(wf: GenerativeWorkflow) -> pd.DataFrame:
    """``data.label_column`` is each case's class: 0 normal, 1 abnormal."""
    from medimg.data.manifest import read_manifest

    return read_manifest(wf.data, "classification")


def _superres_cases(wf: GenerativeWorkflow) -> pd.DataFrame:
    """Images only: the image column stands in for the label column the reader requires."""
    from medimg.data.manifest import read_manifest

    cfg = wf.data.model_copy(update={"label_column": "image", "check_geometry": False})
    return read_manifest(cfg, "segmentation").assign(target=0)


def _run_synthesis(wf: GenerativeWorkflow, df: pd.DataFrame, out: Path, run: Any) -> Any:
    from medimg.generative.synthesis_study import run_synthesis

    return run_synthesis(wf, df, out, run)


def _run_anomaly(wf: GenerativeWorkflow, df: pd.DataFrame, out: Path, run: Any) -> Any:
    from medimg.generative.anomaly_study import run_anomaly

    return run_anomaly(wf, df, out, run)


def _run_superres(wf: GenerativeWorkflow, df: pd.DataFrame, out: Path, run: Any) -> Any:
    from medimg.generative.superres_study import run_superres

    return run_superres(wf, df, out, run)


@dataclass(frozen=True)
class GenerativeStudy:
    """What one generative task does: how its cases are read, and its study."""

    read: Callable[[GenerativeWorkflow], pd.DataFrame]
    run: Callable[[GenerativeWorkflow, pd.DataFrame, Path, Any], tuple[dict[str, float], pd.DataFrame]]


STUDIES: dict[str, GenerativeStudy] = {
    "anomaly": GenerativeStudy(_anomaly_cases, _run_anomaly),
    "superres": GenerativeStudy(_superres_cases, _run_superres),
    "synthesis": GenerativeStudy(_anomaly_cases, _run_synthesis),  # data.label_column: the class
}


def read_cases(wf: GenerativeWorkflow) -> pd.DataFrame:
    """The study's cases with their patient-level split, read by medimg's manifest reader.

    ``task: anomaly`` reads ``data.label_column`` as the case's class (0 normal, 1 abnormal),
    ``task: synthesis`` as the class each case teaches the generator;
    ``task: superres`` needs images only (no label column). A missing manifest with
    ``data.synthetic`` set is generated first.

    Example:
        >>> df = read_cases(load_generative_workflow("workflows/quickstart-anomaly.yaml"))  # doctest: +SKIP
    """
    from medimg.data.splits import assign_splits

    manifest = Path(wf.data.manifest)
    if not manifest.exists() and wf.data.synthetic is not None:
        from medimg.data.synthetic import write_synthetic_study

        s = wf.data.synthetic
        log.info("generating a synthetic study of %d cases in %s", s.cases, manifest.parent)
        write_synthetic_study(manifest.parent, s.cases, s.seed, s.shape, s.spacing, s.oblique_deg)
    df = assign_splits(STUDIES[wf.task].read(wf), wf.data.split)
    if not (df["split"] == "train").any():
        raise DataError(f"{manifest}: no case in the 'train' split (data.split)")
    return df


def run_generative(wf: GenerativeWorkflow, resume: bool = False) -> GenerativeResult:
    """Run the anomaly, super-resolution or synthesis study ``wf`` describes; return its run and test metrics.

    Example:
        >>> res = run_generative(load_generative_workflow("workflows/quickstart-anomaly.yaml"))  # doctest: +SKIP
        >>> res.metrics["test_auroc"]  # doctest: +SKIP
    """
    from medimg.generative.checkpoint import open_run

    t0 = time.perf_counter()
    out = Path(wf.outputs.dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    df = read_cases(wf)
    run = open_run(wf, df, out, resume)  # resume: the epoch checkpoint's run, from its next epoch
    try:
        metrics, per_case = STUDIES[wf.task].run(wf, df, out, run)
    except BaseException as exc:
        run.finish("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    seconds = time.perf_counter() - t0
    run.log_metrics({"wall_seconds": seconds})
    run.finish("FINISHED")
    return GenerativeResult(run.run_id, run.uri, out, metrics, per_case, seconds)


def run_generative_workflow(
    path: str | Path, overrides: Sequence[str] = (), resume: bool = False
) -> tuple[dict[str, Any], list[str], int]:
    """Load the anomaly, superres or synthesis workflow at ``path`` (with ``overrides``) and run it, as ``medimg run`` does.

    Returns the result document, its text lines and the exit code (0).
    """
    from medimg.config.generative import load_generative_workflow
    from medimg.training.run import study_lines

    res = run_generative(load_generative_workflow(path, overrides), resume=resume)
    document = {"workflow": str(path), "run_id": res.run_id, "tracking_uri": res.tracking_uri,
                "out_dir": str(res.out_dir), "seconds": round(res.seconds, 3),
                "metrics": dict(sorted(res.metrics.items()))}  # fmt: skip
    return document, study_lines(res.metrics, res.out_dir, res.run_id, res.tracking_uri), 0
